"""Intake decisions of the pipeline (parse → route → HEAD → register → outcome), driven with
in-memory fakes of the ledger and the object store: orchestration logic only, no servers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from worker.adapters.local_read import LocalDecoder
from worker.domain.events import s3_notification
from worker.domain.outcomes import Ack, Retry
from worker.pipeline import Pipeline
from worker.ports import FileState, Message, ObjectInfo, Registration
from worker.routes import parse_routes
from worker.settings import load_settings

ROUTES = parse_routes(
    """
[[ingestion]]
name = "events"
bucket = "landing"
prefix = "events/"
suffix = ".json"
format = "json"
table = "glue.db.events"
location = "s3://wh/events"

[[ingestion]]
name = "docs"
bucket = "landing"
prefix = "docs/"
suffix = ".json"
format = "json"
table = "glue.db.docs"
location = "s3://wh/docs"
options = { multiline = true }
"""
)


@dataclass
class FakeLedger:
    files: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    async def register(self, items: list[Registration]) -> list[FileState]:
        out = []
        for item in items:
            ident = (item.event.bucket, item.event.key, item.etag)
            row = self.files.setdefault(
                ident, {"id": len(self.files) + 1, "status": "PENDING", "sequencer": item.event.sequencer}
            )
            out.append(FileState(row["id"], *ident, row["status"], None, None))
        return out

    async def key_sequencers(self, keys: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
        return [(b, k, e, r["sequencer"]) for (b, k, e), r in self.files.items() if (b, k) in keys and r["sequencer"]]

    async def record_terminal(self, file_ids: list[int], status: str, error_class: str, message: str) -> int:
        moved = 0
        for row in self.files.values():
            if row["id"] in file_ids and row["status"] == "PENDING":
                row.update(status=status, error_class=error_class, message=message)
                moved += 1
        return moved

    async def reject_message(self, message: Message, reason: str) -> None:
        self.rejected.append((message.body, reason))

    async def states(self, file_ids: list[int]) -> list[FileState]:
        return [
            FileState(r["id"], b, k, e, r["status"], None, None, r.get("lease_left_s"))
            for (b, k, e), r in self.files.items()
            if r["id"] in file_ids
        ]

    def status(self, key: str) -> list[tuple[str, str | None]]:
        return [(r["status"], r.get("error_class")) for (_, k, _), r in self.files.items() if k == key]


@dataclass
class FakeStore:
    objects: dict[tuple[str, str], ObjectInfo] = field(default_factory=dict)
    bodies: dict[tuple[str, str], bytes] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self.heads.append(key)
        return self.objects.get((bucket, key))

    async def get(self, bucket: str, key: str, etag: str) -> bytes | None:
        info = self.objects.get((bucket, key))
        if info is None or info.etag != etag:  # If-Match
            return None
        return self.bodies.get((bucket, key), b"")


def event(key: str, etag: str, size: int = 10, sequencer: str | None = None, bucket: str = "landing") -> str:
    return s3_notification(
        bucket, key, etag, size, sequencer=sequencer or None, event_time=datetime(2026, 11, 22, tzinfo=UTC)
    )


def message(body: str, n: int = 1) -> Message:
    return Message("https://sqs.local/q", f"m{n}", f"h{n}", body, 1, None)


def decoder() -> LocalDecoder:
    return LocalDecoder.for_settings(load_settings().spark)


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, FakeLedger, FakeStore]:
    for name in list(__import__("os").environ):
        if name.startswith("ICEFEED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ICEFEED_BATCH_MAX_FILE_BYTES", "1000")
    monkeypatch.setenv("ICEFEED_SPARK_DIALECT", "sail")
    monkeypatch.setenv("ICEFEED_SPARK_LOCAL_PARSE_MAX_BYTES", "100")
    monkeypatch.setenv("ICEFEED_SPARK_WORKER_READ_MAX_BYTES", "0")  # the engine reads: HEAD at admission
    ledger, store = FakeLedger(), FakeStore()
    pipeline = Pipeline(load_settings(), ROUTES, ledger, store, sink=None, decoder=decoder())  # type: ignore[arg-type]
    return pipeline, ledger, store


async def test_a_routed_existing_file_waits_for_a_batch(parts: tuple[Pipeline, FakeLedger, FakeStore]) -> None:
    pipeline, ledger, store = parts
    store.objects[("landing", "events/a b+c.json")] = ObjectInfo(10, "e1")
    (adm,) = await pipeline.admit([message(event("events/a b+c.json", "e1"))])
    assert adm.outcomes == [] and [w.key for w in adm.waiting.values()] == ["events/a b+c.json"]
    assert ledger.status("events/a b+c.json") == [("PENDING", None)]


async def test_outcomes_for_what_cannot_or_need_not_be_loaded(parts: tuple[Pipeline, FakeLedger, FakeStore]) -> None:
    pipeline, ledger, store = parts
    store.objects[("landing", "events/new.json")] = ObjectInfo(10, "e2")
    store.objects[("landing", "events/big.json")] = ObjectInfo(5000, "e3")
    store.objects[("landing", "docs/doc.json")] = ObjectInfo(500, "e4")
    bodies = [
        "not json",
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
        event("elsewhere/x.json", "e0"),
        event("events/gone.json", "e9"),
        event("events/new.json", "e-old"),
        event("events/big.json", "e3", size=5000),
        event("docs/doc.json", "e4", size=500),
    ]
    adms = await pipeline.admit([message(b, i) for i, b in enumerate(bodies)])
    assert all(a.waiting == {} for a in adms)
    reasons = [a.outcomes[0].reason for a in adms]
    assert all(isinstance(a.outcomes[0], Ack) for a in adms)
    assert reasons[0].startswith("malformed") and ledger.rejected[0][0] == "not json"
    assert reasons[1] == "s3:TestEvent" and reasons[2] == "unrouted"
    assert ledger.status("events/gone.json") == [("GONE", "ObjectGone")]
    assert ledger.status("events/new.json") == [("SKIPPED", "Superseded")]
    assert ledger.status("events/big.json") == [("FAILED", "FileTooLarge")]
    assert ledger.status("docs/doc.json") == [("FAILED", "FileTooLarge")]
    assert "LOCAL_PARSE_MAX_BYTES" in ledger.files[("landing", "docs/doc.json", "e4")]["message"]


async def test_a_file_claimed_by_another_worker_before_its_terminal_verdict_lands_is_not_acked(
    parts: tuple[Pipeline, FakeLedger, FakeStore],
) -> None:
    """Found by the simulator (seed 313): this worker decides "overwritten → SKIPPED, ack" from the
    state register returned, but another worker claims the file first; record_terminal moves
    nothing. Acking would leave the file with no message if that batch is later released."""
    pipeline, ledger, store = parts
    store.objects[("landing", "events/a.json")] = ObjectInfo(10, "e-new")  # the event's e-old is stale
    record = ledger.record_terminal

    async def claimed_first(file_ids: list[int], status: str, error_class: str, message: str) -> int:
        for row in ledger.files.values():  # the other worker's claim lands in between
            if row["id"] in file_ids:
                row.update(status="CLAIMED", lease_left_s=30.0)
        return await record(file_ids, status, error_class, message)

    ledger.record_terminal = claimed_first  # type: ignore[method-assign]
    (adm,) = await pipeline.admit([message(event("events/a.json", "e-old"))])
    (outcome,) = adm.outcomes
    assert isinstance(outcome, Retry) and outcome.in_flight, outcome
    assert ledger.status("events/a.json") == [("CLAIMED", None)]


async def test_an_event_older_by_sequencer_than_one_seen_is_skipped(
    parts: tuple[Pipeline, FakeLedger, FakeStore],
) -> None:
    pipeline, ledger, store = parts
    store.objects[("landing", "events/k.json")] = ObjectInfo(10, "e1")
    await pipeline.admit([message(event("events/k.json", "e2", sequencer="00AA"), 1)])  # newer, already gone
    store.objects[("landing", "events/k.json")] = ObjectInfo(10, "e1")
    (adm,) = await pipeline.admit([message(event("events/k.json", "e1", sequencer="009F"), 2)])
    assert isinstance(adm.outcomes[0], Ack) and adm.waiting == {}
    assert ledger.files[("landing", "events/k.json", "e1")]["status"] == "SKIPPED"
    # A newer sequencer for the same key is not stale: the object is that version, and it waits.
    store.objects[("landing", "events/k.json")] = ObjectInfo(10, "e5")
    (adm,) = await pipeline.admit([message(event("events/k.json", "e5", sequencer="00AB"), 3)])
    assert adm.outcomes == [] and len(adm.waiting) == 1, adm
    assert ledger.files[("landing", "events/k.json", "e5")]["status"] == "PENDING"


async def test_a_file_already_loaded_is_acked_and_one_in_flight_retried(
    parts: tuple[Pipeline, FakeLedger, FakeStore],
) -> None:
    pipeline, ledger, store = parts
    store.objects[("landing", "events/done.json")] = ObjectInfo(10, "d")
    store.objects[("landing", "events/busy.json")] = ObjectInfo(10, "b")
    ledger.files[("landing", "events/done.json", "d")] = {"id": 1, "status": "LOADED", "sequencer": None}
    ledger.files[("landing", "events/busy.json", "b")] = {"id": 2, "status": "CLAIMED", "sequencer": None}
    done, busy = await pipeline.admit(
        [message(event("events/done.json", "d"), 1), message(event("events/busy.json", "b"), 2)]
    )
    assert done.outcomes == [Ack("loaded")]
    assert isinstance(busy.outcomes[0], Retry) and busy.outcomes[0].delay_s >= 1


async def test_small_json_files_are_not_headed_and_their_get_tells_gone_from_replaced(
    parts: tuple[Pipeline, FakeLedger, FakeStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ledger, store = parts
    monkeypatch.setenv("ICEFEED_SPARK_WORKER_READ_MAX_BYTES", "1000")
    pipeline = Pipeline(load_settings(), ROUTES, ledger, store, sink=None, decoder=decoder())  # type: ignore[arg-type]
    store.objects[("landing", "events/new.json")] = ObjectInfo(10, "e2")
    store.objects[("landing", "events/ok.json")] = ObjectInfo(10, "e1")
    store.bodies[("landing", "events/ok.json")] = b'{"a": 1}\n{"a": 2.5}\n'
    store.objects[("landing", "events/bad.json")] = ObjectInfo(10, "e3")
    store.bodies[("landing", "events/bad.json")] = b'{"a": 1}\n{"a": \n'
    store.objects[("landing", "events/huge.json")] = ObjectInfo(5000, "e4")
    bodies = [
        event("events/gone.json", "e9"),
        event("events/new.json", "e-old"),
        event("events/ok.json", "e1"),
        event("events/bad.json", "e3"),
        event("events/huge.json", "e4", size=5000),
    ]
    adms = await pipeline.admit([message(b, i) for i, b in enumerate(bodies)])
    assert store.heads == ["events/huge.json"]  # only the file the engine would read is checked first
    waiting = [w for a in adms for w in a.waiting.values()]
    assert [w.key for w in waiting] == ["events/gone.json", "events/new.json", "events/ok.json", "events/bad.json"]
    decoded, settled = await pipeline._fetch(waiting, uuid4())
    by_key = {w.key: w.file_id for w in waiting}
    assert (settled[by_key["events/gone.json"]].status, settled[by_key["events/gone.json"]].error_class) == (
        "GONE",
        "ObjectGone",
    )
    assert (settled[by_key["events/new.json"]].status, settled[by_key["events/new.json"]].error_class) == (
        "SKIPPED",
        "Superseded",
    )
    ok = decoded[by_key["events/ok.json"]]
    assert ok.rows == 2 and ok.columns["a"].to_pylist() == [1.0, 2.5]
    bad = decoded[by_key["events/bad.json"]]
    assert bad.error_class == "ParseError" and "line 2" in str(bad)
    assert set(decoded) | set(settled) == set(by_key.values())


async def test_keys_the_engine_would_rewrite_fail_at_admission_without_a_head(
    parts: tuple[Pipeline, FakeLedger, FakeStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, ledger, store = parts
    keys = ["events/x/sub/../target.json", "events/x//double.json", "events/x/./single.json"]
    for key in [*keys, "events/x/target.json"]:
        store.objects[("landing", key)] = ObjectInfo(10, "e1")
    adms = await pipeline.admit([message(event(k, "e1"), i) for i, k in enumerate([*keys, "events/x/target.json"])])
    for key, adm in zip(keys, adms, strict=False):
        assert ledger.status(key) == [("FAILED", "UnsafeKey")]
        assert isinstance(adm.outcomes[0], Ack) and adm.waiting == {}  # acked: never retried
        assert "path segment" in ledger.files[("landing", key, "e1")]["message"]
    assert store.heads == ["events/x/target.json"]  # only the safe key was looked at
    assert [w.key for w in adms[-1].waiting.values()] == ["events/x/target.json"]
    # A file the worker reads itself (small JSON) is fetched by its literal key: it waits for a batch.
    monkeypatch.setenv("ICEFEED_SPARK_WORKER_READ_MAX_BYTES", "1000")
    local = Pipeline(load_settings(), ROUTES, ledger, store, sink=None, decoder=decoder())  # type: ignore[arg-type]
    small, big = await local.admit(
        [message(event("events/y//z.json", "e7"), 9), message(event("events/y/../big.json", "e8", size=2000), 10)]
    )
    assert small.outcomes == [] and [w.key for w in small.waiting.values()] == ["events/y//z.json"]
    assert ledger.status("events/y//z.json") == [("PENDING", None)]
    assert isinstance(big.outcomes[0], Ack) and ledger.status("events/y/../big.json") == [("FAILED", "UnsafeKey")]


@pytest.mark.parametrize(
    ("error_class", "attempts", "waits"),
    [
        ("SparkUnavailable", 1, True),  # the engine is down: a wait, the message is not spent
        ("PgConnectionLost", 7, True),
        ("TableBusy", 3, True),
        ("SparkUnavailable", 51, False),  # past ICEFEED_SQS_OUTAGE_MAX_ATTEMPTS (50): receives count again
        ("Unknown", 1, False),  # the file's own unexplained failure spends receives (then the DLQ)
        (None, 0, False),
    ],
)
def test_a_file_left_pending_by_an_outage_waits_without_spending_its_message(
    parts: tuple[Pipeline, FakeLedger, FakeStore], error_class: str | None, attempts: int, waits: bool
) -> None:
    """Found by the simulator (seeds 4810, 18166 …): an engine unreachable for longer than the
    receive budget (backoff × maxReceiveCount) sent a PENDING file's message to the DLQ."""
    pipeline, _, _ = parts
    state = FileState(
        1, "landing", "events/a.json", "e1", "PENDING", None, "down", error_class=error_class, attempts=attempts
    )
    outcome = pipeline.outcome_for(message(event("events/a.json", "e1")), state)
    assert isinstance(outcome, Retry) and outcome.in_flight is waits, outcome
    if waits:  # the backoff grows with the file's claims, which renewing the message does not reset
        assert outcome.delay_s == min(900, 10 * 2 ** (attempts - 1))
