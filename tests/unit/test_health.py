"""Unit tests for the operations endpoint (worker.observability.health) and the probe runner
(worker.probes): a real server on an ephemeral port, fake probes, a raw asyncio HTTP client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from worker.domain.errors import ConfigError, TransientError
from worker.observability.health import Checks, HealthServer, runner_liveness
from worker.observability.logging import Redactor
from worker.observability.metrics import Metrics
from worker.probes import Probe, ProbeResult, ProbeRunner, postgres_probe, render, sqs_probe, summary


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def request(port: int, path: str, method: str = "GET", raw: bytes | None = None) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw if raw is not None else f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # the server closes the connection
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split(" ")[1]), headers, body)


@dataclass
class FakeProbe:
    name: str
    detail: str = "fine"
    error: Exception | None = None
    calls: int = 0
    gate: asyncio.Event | None = None

    async def __call__(self) -> str:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.detail

    def probe(self) -> Probe:
        return Probe(self.name, self, f"fix {self.name}")


@dataclass
class Live:
    checks: Checks = field(default_factory=lambda: {"receivers": (True, "2 of 2 running")})

    def __call__(self) -> Checks:
        return self.checks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    server: HealthServer
    metrics: Metrics
    probes: dict[str, FakeProbe]
    runner: ProbeRunner
    live: Live
    clock: Clock

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics(CollectorRegistry())
    probes = {n: FakeProbe(n) for n in ("postgres", "spark", "sqs")}
    clock = Clock()
    runner = ProbeRunner([p.probe() for p in probes.values()], timeout_s=0.2, cache_s=5, clock=clock)
    live = Live()
    server = HealthServer(metrics, runner.run, live, host="127.0.0.1", port=0)
    await server.start()
    task = asyncio.create_task(server.serve())
    try:
        yield Served(server, metrics, probes, runner, live, clock)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.close()
        await runner.close()


# -- endpoints -------------------------------------------------------------------------------------


async def test_metrics_are_served_in_the_prometheus_text_format(served: Served) -> None:
    served.metrics.file_outcome("LOADED", 3)
    reply = await request(served.port, "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    text = reply.body.decode()
    assert 'icefeed_files_total{outcome="loaded"} 3.0' in text
    assert 'icefeed_files_total{outcome="failed"} 0.0' in text
    assert "# TYPE icefeed_commit_duration_seconds histogram" in text


async def test_healthz_reports_liveness_and_fails_on_a_dead_receiver(served: Served) -> None:
    reply = await request(served.port, "/healthz")
    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "ok"
    assert body["checks"]["receivers"] == {"ok": True, "detail": "2 of 2 running"}
    assert body["checks"]["event_loop"]["ok"] is True
    served.live.checks = {"receivers": (False, "1 of 2 running")}
    reply = await request(served.port, "/healthz?verbose=1")
    assert reply.status == 503
    assert reply.json()["status"] == "failing"


async def test_healthz_fails_when_the_event_loop_timer_is_late(served: Served) -> None:
    served.server._ticking = True
    served.server._tick_at = time.monotonic() - 30  # as if the loop had been blocked for 30 s
    reply = await request(served.port, "/healthz")
    assert reply.status == 503
    assert reply.json()["checks"]["event_loop"]["ok"] is False


async def test_readyz_is_ready_only_when_every_probe_passes(served: Served) -> None:
    reply = await request(served.port, "/readyz")
    assert reply.status == 200, reply.body
    assert set(reply.json()["checks"]) == {"postgres", "spark", "sqs"}
    served.probes["postgres"].error = TransientError("connection refused", error_class="PgUnavailable")
    served.clock.now += 10  # past the cache
    reply = await request(served.port, "/readyz")
    assert reply.status == 503
    pg = reply.json()["checks"]["postgres"]
    assert pg["ok"] is False
    assert pg["detail"] == "PgUnavailable: connection refused"
    assert pg["hint"] == "fix postgres"
    assert reply.json()["checks"]["spark"]["ok"] is True


async def test_readyz_answers_from_its_cache_for_a_few_seconds(served: Served) -> None:
    for _ in range(3):
        assert (await request(served.port, "/readyz")).status == 200
    assert served.probes["spark"].calls == 1
    served.probes["spark"].error = RuntimeError("gone")
    served.clock.now += 4.9
    assert (await request(served.port, "/readyz")).status == 200  # still the cached answer
    served.clock.now += 0.2
    assert (await request(served.port, "/readyz")).status == 503
    assert served.probes["spark"].calls == 2


async def test_a_hung_probe_fails_within_the_timeout_and_is_not_started_twice(served: Served) -> None:
    spark = served.probes["spark"]
    spark.gate = asyncio.Event()
    # The gate stays closed: the only way to an answer is the probe's timeout (no wall-clock bound).
    reply = await request(served.port, "/readyz")
    assert reply.status == 503
    assert reply.json()["checks"]["spark"]["detail"] == "no answer within 0.2 s"
    served.clock.now += 10
    assert (await request(served.port, "/readyz")).status == 503
    assert spark.calls == 1  # the first call is still pending: awaited again, not repeated
    spark.gate.set()
    served.clock.now += 10
    assert (await request(served.port, "/readyz")).status == 200
    assert spark.calls == 1


async def test_head_unknown_paths_other_methods_and_garbage(served: Served) -> None:
    head = await request(served.port, "/metrics", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 100
    assert (await request(served.port, "/nope")).status == 404
    post = await request(served.port, "/readyz", method="POST")
    assert post.status == 405 and post.headers["Allow"] == "GET, HEAD"
    assert (await request(served.port, "/", raw=b"\x16\x03\x01 hello\r\n\r\n")).status == 400
    assert (await request(served.port, "/")).status == 200


async def test_the_server_releases_its_port_on_close() -> None:
    server = HealthServer(Metrics(CollectorRegistry()), _no_probes, Live(), host="127.0.0.1", port=0)
    async with server:
        task = asyncio.create_task(server.serve())
        assert (await request(server.port, "/healthz")).status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(OSError):
        await request(server.port, "/healthz")


async def test_a_busy_port_fails_at_start() -> None:
    first = HealthServer(Metrics(CollectorRegistry()), _no_probes, Live(), host="127.0.0.1", port=0)
    async with first:
        second = HealthServer(Metrics(CollectorRegistry()), _no_probes, Live(), host="127.0.0.1", port=first.port)
        with pytest.raises(OSError):
            await second.start()


async def _no_probes() -> list[ProbeResult]:
    return []


# -- the probe runner and its output ----------------------------------------------------------------


async def test_probe_details_are_scrubbed_of_secrets() -> None:
    secret = "hunter2-pass-xyz"
    failing = FakeProbe("postgres", error=TransientError(f"cannot connect to postgresql://u:{secret}@db/x"))
    passing = FakeProbe("spark", detail=f"sc://h:443/;token={secret}")
    runner = ProbeRunner([failing.probe(), passing.probe()], timeout_s=1, scrub=Redactor([secret]).scrub)
    results = await runner.run()
    text = json.dumps([r.as_dict() for r in results])
    assert secret not in text
    assert "***" in results[0].detail and "***" in results[1].detail


async def test_the_postgres_probe_runs_select_1_and_sqs_needs_a_queue() -> None:
    seen: list[str] = []

    async def fetchval(sql: str) -> int:
        seen.append(sql)
        return 1

    runner = ProbeRunner([postgres_probe(fetchval), sqs_probe(_never_called, [])], timeout_s=1)
    pg, sqs = await runner.run()
    assert pg.ok and seen == ["SELECT 1;"]
    assert not sqs.ok and "ICEFEED_SQS_QUEUE_URLS" in sqs.detail


async def _never_called(url: str) -> dict[str, str]:
    raise AssertionError("no queue, no call")


async def test_the_sqs_probe_says_when_a_queue_has_no_dlq() -> None:
    async def attributes(url: str) -> dict[str, str]:
        return {"ApproximateNumberOfMessages": "7"} | ({"RedrivePolicy": "{}"} if url.endswith("a") else {})

    (result,) = await ProbeRunner([sqs_probe(attributes, ["https://q.local/1/a", "https://q.local/1/b"])], 1).run()
    assert result.ok
    assert result.detail == "a: 7 visible, with a DLQ; b: 7 visible, NO DLQ (RedrivePolicy missing)"


def test_render_gives_one_line_per_probe_with_a_fix_for_failures() -> None:
    results = [
        ProbeResult("postgres", True, "SELECT 1 in 2 ms", "fix pg", 0.002),
        ProbeResult("spark", False, "SparkUnavailable: refused", "check ICEFEED_SPARK_URL", 0.1),
    ]
    lines = render(results)
    assert lines == [
        "PASS  postgres  SELECT 1 in 2 ms",
        "FAIL  spark     SparkUnavailable: refused — fix: check ICEFEED_SPARK_URL",
    ]
    assert summary(results) == "1 of 2 checks failed: spark"
    assert summary(results[:1]) == "all 1 checks passed"
    assert results[0].as_dict()["hint"] == "" and results[1].as_dict()["hint"] == "check ICEFEED_SPARK_URL"


async def test_a_probe_raising_a_config_error_fails_with_its_class() -> None:
    probe = FakeProbe("ledger", error=ConfigError("2 migration(s) pending"))
    (result,) = await ProbeRunner([probe.probe()], 1).run()
    assert not result.ok and result.detail == "ConfigError: 2 migration(s) pending"


# -- runner liveness ----------------------------------------------------------------------------------


@dataclass
class FakeRunner:
    receivers: list[asyncio.Task[None]]
    heartbeat_at: float
    heartbeat_interval: float = 10.0


async def test_runner_liveness_needs_live_receivers_and_a_recent_heartbeat() -> None:
    forever = asyncio.create_task(asyncio.Event().wait())
    finished = asyncio.create_task(_return())
    await finished
    stopping = False
    runner = FakeRunner([forever, forever], time.monotonic())
    checks = runner_liveness(runner, lambda: stopping)
    assert all(ok for ok, _ in checks().values())
    runner.receivers = [forever, finished]
    assert checks()["receivers"] == (False, "1 of 2 running")
    stopping = True
    assert checks()["receivers"][0] is True  # receivers end on purpose while stopping
    runner.heartbeat_at = time.monotonic() - (3 * 10 + 61)
    assert checks()["heartbeat"][0] is False
    runner.receivers = []
    assert checks()["receivers"] == (True, "stopping: receivers finish their last poll")
    forever.cancel()


async def _return() -> None:
    return None


async def test_the_bad_records_check_writes_a_marker_under_every_quarantining_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.probes import bad_records_probe
    from worker.settings import load_settings

    routes = tmp_path / "routes.toml"
    base = 'bucket = "landing"\nformat = "json"\n'
    routes.write_text(
        f'[[ingestion]]\nname = "a"\nprefix = "a/"\n{base}table = "glue.db.a"\nlocation = "s3://wh/db/a"\n'
        'bad_records = "quarantine"\nbad_records_location = "s3://bad/kept"\n\n'
        f'[[ingestion]]\nname = "b"\nprefix = "b/"\n{base}table = "glue.db.b"\nlocation = "s3://wh/db/b"\n\n'
        f'[[ingestion]]\nname = "c"\nprefix = "c/"\n{base}table = "glue.db.c"\nlocation = "s3://wh/db/c"\n'
        'bad_records = "quarantine"\nbad_records_location = "s3://gone/x"\n'
    )
    monkeypatch.setenv("ICEFEED_ROUTES_FILE", str(routes))
    monkeypatch.setenv("ICEFEED_SQS_QUEUE_URLS", "https://sqs.local/1/q")
    written: list[tuple[str, str]] = []

    class Store:
        async def write(self, bucket: str, key: str, body: bytes) -> None:
            if bucket == "gone":
                raise TransientError("S3 PutObject: NoSuchBucket", error_class="AwsUnavailable")
            written.append((bucket, key))

    probe = bad_records_probe(load_settings(), Store())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"cannot write bad records for: c \(s3://gone/x/glue.db.c/.icefeed-check\)"):
        await probe.check()
    assert written == [("bad", "kept/glue.db.a/.icefeed-check")]  # route b keeps none: not checked
