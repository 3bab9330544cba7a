"""Unit tests for worker.faults: test-only fault points (exit and hold)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest

import worker.faults as faults_module
from tests.fakes import ROUTES, FakeEngine, FakeLedger, FakeStore, body_of
from worker.adapters.local_read import LocalDecoder
from worker.domain.batching import FileWork
from worker.domain.events import FileEvent
from worker.faults import POINTS, Faults, install
from worker.pipeline import Pipeline
from worker.ports import Registration
from worker.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


async def wait_for_file(path: Path, timeout_s: float = 3.0) -> None:
    """Poll (yielding to the loop) until ``path`` exists or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s}s")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("spec", ["", "   ", ",", " , ,"])
def test_empty_spec_is_falsy(spec: str) -> None:
    assert not Faults(spec)
    assert not Faults()


async def test_empty_spec_hit_returns_at_once(tmp_path: Path) -> None:
    faults = Faults("")
    for point in sorted(POINTS):
        await asyncio.wait_for(faults.hit(point), timeout=1.0)
    await asyncio.wait_for(faults.hit("not_a_point"), timeout=1.0)
    assert list(tmp_path.iterdir()) == []


def test_valid_specs_are_truthy(tmp_path: Path) -> None:
    assert Faults("after_commit=exit")
    assert Faults(f" after_claim=hold:{tmp_path} , after_finalize=exit ")
    assert Faults(",".join(f"{p}=exit" for p in sorted(POINTS)))


def test_points() -> None:
    assert {
        "after_claim",
        "after_fence",
        "before_append",
        "after_write_start",
        "after_commit",
        "after_finalize",
        "maintain_staged",
        "maintain_committed",
    } == POINTS


@pytest.mark.parametrize(
    "entry",
    [
        "after_commit",
        "after_commit=",
        "after_commit=explode",
        "after_commit=hold",
        "after_commit=EXIT",
        "nowhere=exit",
        "=exit",
        "after_commit:exit",
    ],
)
def test_bad_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="ICEFEED_FAULTS: bad entry") as info:
        Faults(f"after_claim=exit,{entry}")
    message = str(info.value)
    assert repr(entry) in message
    for point in POINTS:
        assert point in message


# --------------------------------------------------------------------------- hold


async def test_hold_waits_for_release(tmp_path: Path) -> None:
    folder = tmp_path / "holds" / "nested"  # created on demand
    faults = Faults(f"after_commit=hold:{folder}")
    task = asyncio.create_task(faults.hit("after_commit"))
    try:
        await wait_for_file(folder / "after_commit.reached")
        assert not task.done(), "hit returned before the release file existed"
        assert not (folder / "after_commit.release").exists()
        (folder / "after_commit.release").touch()
        await asyncio.wait_for(task, timeout=3.0)
    finally:
        task.cancel()
    assert task.done()
    assert task.exception() is None


async def test_hold_keeps_polling_until_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: count the hold loop's sleeps instead of waiting real time."""
    real_sleep = asyncio.sleep
    delays: list[float] = []

    async def counting_sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(faults_module, "asyncio", SimpleNamespace(sleep=counting_sleep))
    task = asyncio.create_task(Faults(f"after_finalize=hold:{tmp_path}").hit("after_finalize"))
    try:
        for _ in range(1000):
            if len(delays) >= 20:
                break
            await real_sleep(0)
        assert len(delays) >= 20
        assert not task.done(), "hit returned without a release file"
        assert (tmp_path / "after_finalize.reached").exists()
        assert all(d > 0 for d in delays), "the hold loop must not busy-spin"
        (tmp_path / "after_finalize.release").touch()
        await asyncio.wait_for(task, timeout=3.0)
    finally:
        task.cancel()
    polls = len(delays)
    assert task.exception() is None
    assert len(delays) == polls  # no polling after the release


async def test_hold_only_at_its_own_point(tmp_path: Path) -> None:
    faults = Faults(f"after_commit=hold:{tmp_path}")
    await asyncio.wait_for(faults.hit("after_claim"), timeout=1.0)
    await asyncio.wait_for(faults.hit("after_finalize"), timeout=1.0)
    assert list(tmp_path.iterdir()) == []


async def test_hold_with_release_already_present(tmp_path: Path) -> None:
    (tmp_path / "after_claim.release").touch()
    await asyncio.wait_for(Faults(f"after_claim=hold:{tmp_path}").hit("after_claim"), timeout=1.0)
    assert (tmp_path / "after_claim.reached").exists()


async def test_held_hit_can_be_cancelled(tmp_path: Path) -> None:
    task = asyncio.create_task(Faults(f"after_write_start=hold:{tmp_path}").hit("after_write_start"))
    await wait_for_file(tmp_path / "after_write_start.reached")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1.0)


# --------------------------------------------------------------------------- exit (in a subprocess)

EXIT_SCRIPT = """
import asyncio, sys
from worker.faults import Faults
faults = Faults("after_commit=exit")
asyncio.run(faults.hit(sys.argv[1]))
print("survived", flush=True)
"""


def run_exit_script(point: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, point],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_exit_kills_the_process_with_137() -> None:
    result = run_exit_script("after_commit")
    assert result.returncode == 137, result.stderr
    assert "survived" not in result.stdout


def test_exit_only_at_its_own_point() -> None:
    result = run_exit_script("after_claim")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "survived"


# --------------------------------------------------------------------------- the wrappers


class Recorder(Faults):
    """Faults that record the points reached instead of acting on them."""

    def __init__(self) -> None:
        super().__init__("after_claim=exit")  # set: the wrappers are installed
        self.reached: list[str] = []

    async def hit(self, point: str) -> None:
        self.reached.append(point)


def test_without_faults_nothing_is_wrapped() -> None:
    ledger, sink = object(), object()
    assert install(ledger, sink, Faults("")) == (ledger, sink)  # type: ignore[arg-type]


async def test_the_wrapped_ports_reach_every_point_of_one_batch_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch through the pipeline over the fakes, with the ledger and the sink wrapped as
    ``run_worker`` wraps them: the points come in protocol order, each once."""
    for name in [k for k in os.environ if k.startswith("ICEFEED_")]:
        monkeypatch.delenv(name)
    faults = Recorder()
    store, ledger = FakeStore(), FakeLedger()
    engine = FakeEngine(store)
    engine.on_append = faults.append_started
    settings = load_settings(
        worker_id="w1", sqs={"queue_urls": ["https://sqs.local/q"]}, spark={"worker_read_max_bytes": 0}
    )
    wrapped_ledger, wrapped_sink = install(ledger, engine, faults)  # type: ignore[arg-type]
    pipeline = Pipeline(
        settings, ROUTES, wrapped_ledger, store, wrapped_sink, LocalDecoder.for_settings(settings.spark)
    )  # type: ignore[arg-type]
    body = body_of("ev/a.json", "1", 3)
    etag = store.put("landing", "ev/a.json", body)
    event = FileEvent("landing", "ev/a.json", len(body), etag, None, None, None, "ObjectCreated:Put", "s3")
    (state,) = await ledger.register([Registration("ev", event, etag, len(body))])
    await pipeline.run_batch("cat.db.events", [FileWork(state.file_id, "ev", "landing", "ev/a.json", etag, len(body))])
    (loaded,) = await ledger.states([state.file_id])
    assert loaded.status == "LOADED"
    assert faults.reached == [
        "after_claim",
        "after_fence",
        "before_append",
        "after_write_start",
        "after_commit",
        "after_finalize",
    ]
    faults.reached.clear()
    await wrapped_ledger.abort(uuid4(), "w1", "Recovered", "x", [])  # not a batch it claimed: no point
    assert faults.reached == []
