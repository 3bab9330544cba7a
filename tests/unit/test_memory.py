"""The memory budget (worker/memory.py) and the pipeline's fetch within it: reservations wait for
room in order, one item larger than the budget runs alone, a batch never grows past the budget by
itself, and files over the decode limits go to the engine or fail with DecompressionLimit."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from uuid import uuid4

import pytest

from worker.adapters.local_read import Decoded, DecodeLimit, LocalDecoder
from worker.domain.batching import FileWork
from worker.memory import MemoryBudget, decode_cost, held_cost
from worker.pipeline import Pipeline
from worker.routes import parse_routes
from worker.settings import load_settings

MiB = 1024 * 1024


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- the budget --------------------------------------------------------------------------------


async def test_a_hold_that_fits_is_granted_at_once_and_released() -> None:
    budget = MemoryBudget(100)
    a = budget.hold()
    await a.grow(60)
    assert (a.size, budget.used) == (60, 60)
    a.shrink_to(20)
    assert budget.used == 20
    a.release()
    assert budget.used == 0 and budget.peak == 60


async def test_a_hold_waits_for_room_and_gets_it_when_another_is_released() -> None:
    budget = MemoryBudget(100)
    a, b = budget.hold(), budget.hold()
    await a.grow(70)
    waiting = asyncio.ensure_future(b.grow(40))
    await settle()
    assert not waiting.done() and budget.used == 70
    a.release()
    await asyncio.wait_for(waiting, 5)
    assert (budget.used, b.size) == (40, 40)
    assert budget.peak <= budget.limit


async def test_one_item_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    small, big = budget.hold(), budget.hold()
    await small.grow(10)
    waiting = asyncio.ensure_future(big.grow(500))
    await settle()
    assert not waiting.done()  # not next to anything else
    small.release()
    await asyncio.wait_for(waiting, 5)
    assert budget.used == 500  # alone
    late = budget.hold()
    blocked = asyncio.ensure_future(late.grow(1))
    await settle()
    assert not blocked.done()  # nothing joins it while it runs over the budget
    big.release()
    await asyncio.wait_for(blocked, 5)


async def test_the_budget_grants_in_order_a_large_request_is_not_overtaken() -> None:
    budget = MemoryBudget(100)
    a, big, small = budget.hold(), budget.hold(), budget.hold()
    await a.grow(50)
    first = asyncio.ensure_future(big.grow(80))
    await settle()
    second = asyncio.ensure_future(small.grow(10))  # would fit now, but the large one came first
    await settle()
    assert not first.done() and not second.done()
    a.release()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert budget.used == 90


async def test_a_cancelled_waiter_leaves_the_books_right() -> None:
    budget = MemoryBudget(100)
    a, b, c = budget.hold(), budget.hold(), budget.hold()
    await a.grow(90)
    gone = asyncio.ensure_future(b.grow(50))
    after = asyncio.ensure_future(c.grow(20))
    await settle()
    gone.cancel()
    await settle()
    assert not after.done() and b.size == 0
    a.shrink_to(70)  # room for c now that b no longer waits ahead of it
    await asyncio.wait_for(after, 5)
    assert budget.used == 90 and b.size == 0


def test_costs_count_values_not_only_bytes() -> None:
    # 10 M lines of {} are 30 MB of text but 20 M values: the cost is in the gigabytes.
    assert decode_cost(30_000_000, 20_000_000) > 2_000_000_000
    assert decode_cost(30_000_000, 20_000_000) > 10 * decode_cost(30_000_000, 100)
    assert held_cost(1000, 10, 40) == 2000 + 10 * (40 + 12)


# -- the pipeline's fetch within the budget ---------------------------------------------------


def route(name: str, options: str = "") -> str:
    """An ingestion of ``<name>/`` JSON objects in bucket ``landing`` into ``glue.db.<name>``."""
    fields = {"name": name, "bucket": "landing", "prefix": f"{name}/", "format": "json"}
    text = "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    return f'[[ingestion]]\n{text}table = "glue.db.{name}"\nlocation = "s3://wh/{name}"\n{options}\n'


ROUTES = route("events") + route("docs", "options = { multiline = true }")


@dataclass
class Store:
    bodies: dict[str, bytes] = field(default_factory=dict)
    gate: asyncio.Event | None = None

    async def get(self, bucket: str, key: str, etag: str) -> bytes | None:
        if self.gate is not None:
            await self.gate.wait()
        return self.bodies.get(key)

    async def head(self, bucket: str, key: str) -> None:
        return None


def pipeline_with(monkeypatch: pytest.MonkeyPatch, store: Store, **env: str) -> Pipeline:
    monkeypatch.setenv("ICEFEED_SPARK_DIALECT", "sail")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    decoder = LocalDecoder.for_settings(settings.spark)
    return Pipeline(settings, parse_routes(ROUTES), ledger=None, store=store, sink=None, decoder=decoder)  # type: ignore[arg-type]


def work(file_id: int, key: str, body: bytes) -> FileWork:
    ingestion = "docs" if key.startswith("docs/") else "events"
    return FileWork(file_id, ingestion, "landing", key, f"e{file_id}", len(body), None)


def jsonl(n: int, width: int = 10) -> bytes:
    return b"".join(b'{"id": %d, "s": "%s"}\n' % (i, b"x" * width) for i in range(n))


BOMB = gzip.compress(b"{}\n" * 10_000_000, 9)  # 29 KB; 30 MB and 20 M values once inflated


async def test_a_gzip_bomb_is_left_to_the_engine_which_can_read_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store({"events/bomb.json.gz": BOMB, "events/ok.json": jsonl(3)})
    pipeline = pipeline_with(monkeypatch, store)
    files = [work(1, "events/bomb.json.gz", BOMB), work(2, "events/ok.json", store.bodies["events/ok.json"])]
    decoded, settled = await pipeline._fetch(files, batch_id := uuid4())
    assert set(decoded) == {2} and not settled  # file 1: read by the engine, by path
    assert pipeline.memory.peak < 100 * MiB  # never inflated past the limit, never parsed
    pipeline._free(batch_id)
    assert pipeline.memory.used == 0 and not decoded  # the decoded rows are let go with the hold


async def test_a_bomb_the_engine_cannot_read_fails_with_decompression_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = gzip.compress(b"[" + b"{}," * 5_000_000 + b"{}]", 9)  # whole-file JSON: Sail cannot read it
    store = Store({"docs/bomb.json.gz": bomb})
    pipeline = pipeline_with(monkeypatch, store)
    decoded, _ = await pipeline._fetch([work(1, "docs/bomb.json.gz", bomb)], uuid4())
    error = decoded[1]
    assert isinstance(error, DecodeLimit) and error.error_class == "DecompressionLimit"
    assert "ICEFEED_SPARK_WORKER_DECODE_MAX_VALUES" in str(error)


async def test_the_hold_shrinks_to_what_the_decoded_files_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    body = jsonl(1000)
    pipeline = pipeline_with(monkeypatch, Store({"events/a.json": body}))
    f = work(1, "events/a.json", body)
    decoded, _ = await pipeline._fetch([f], batch_id := uuid4())
    d = decoded[1]
    assert isinstance(d, Decoded) and d.rows == 1000
    arrow = sum(a.nbytes for a in d.columns.values())
    assert pipeline.memory.used == held_cost(arrow, 1000, len(f.source_file))
    assert pipeline.memory.peak >= decode_cost(len(body), 1000)  # the parse was paid for first
    pipeline._free(batch_id)
    assert pipeline.memory.used == 0


async def test_a_second_batch_waits_for_the_first_to_free_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    body = jsonl(2000, width=100)  # ~250 KB: its parse alone needs over 1 MiB
    store = Store({"events/a.json": body, "events/b.json": body})
    pipeline = pipeline_with(monkeypatch, store, ICEFEED_MEMORY_BUDGET_BYTES=str(4 * MiB))
    first_id = uuid4()
    await pipeline._fetch([work(1, "events/a.json", body)], first_id)
    held = pipeline.memory.used
    assert held > 0
    pipeline.memory.limit = held + 1024  # no room for another batch next to it
    second = asyncio.ensure_future(pipeline._fetch([work(2, "events/b.json", body)], uuid4()))
    await settle()
    assert not second.done() and pipeline.memory.used == held  # not even its body is fetched yet
    pipeline._free(first_id)
    decoded, _ = await asyncio.wait_for(second, 10)
    assert isinstance(decoded[2], Decoded) and decoded[2].rows == 2000


async def test_a_batch_never_grows_past_the_budget_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    body = jsonl(2000, width=100)
    keys = [f"events/{i}.json" for i in range(4)] + ["docs/d.json"]
    doc = b"[" + b",".join(b'{"id": %d, "s": "%s"}' % (i, b"x" * 100) for i in range(2000)) + b"]"
    store = Store({k: body for k in keys[:4]} | {"docs/d.json": doc})
    budget = decode_cost(len(body), 0) * 2  # room for about one file at a time
    pipeline = pipeline_with(monkeypatch, store, ICEFEED_MEMORY_BUDGET_BYTES=str(budget))
    files = [work(i + 1, k, store.bodies[k]) for i, k in enumerate(keys)]
    decoded, settled = await pipeline._fetch(files, uuid4())
    assert isinstance(decoded[1], Decoded)  # the first file runs (alone if need be)
    assert 2 not in decoded and 3 not in decoded and 4 not in decoded  # JSON lines: the engine reads them
    assert (settled[5].status, settled[5].error_class) == ("PENDING", "MemoryBudget")  # later, in another batch
    assert pipeline.memory.peak <= max(budget, decode_cost(len(body), 0) * 3)


async def test_fetches_wait_on_one_decoder_and_hold_their_bodies_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    body = jsonl(10)
    store = Store({"events/a.json": body, "events/b.json": body}, gate=asyncio.Event())
    pipeline = pipeline_with(monkeypatch, store)
    a = asyncio.ensure_future(pipeline._fetch([work(1, "events/a.json", body)], uuid4()))
    b = asyncio.ensure_future(pipeline._fetch([work(2, "events/b.json", body)], uuid4()))
    await settle()
    assert pipeline.memory.decoding.locked() and pipeline.memory.used == len(body)  # b waits for the decoder
    store.gate.set()
    (da, _), (db, _) = await asyncio.wait_for(asyncio.gather(a, b), 10)
    assert da[1].rows == db[2].rows == 10  # type: ignore[union-attr]


# -- staging worker-read rows under the gRPC message limit (adapters/spark_sink.py) ------------


@dataclass
class FakeFrame:
    rows: int
    views: tuple[str, ...] = ()

    def createOrReplaceTempView(self, name: str) -> None:
        self.session.views[name] = self  # type: ignore[attr-defined]

    def unionByName(self, other: FakeFrame) -> FakeFrame:
        return FakeFrame(self.rows + other.rows, self.views + other.views)


@dataclass
class FakeSession:
    """Records what each request would carry: the Arrow bytes of every createDataFrame."""

    sent: list[int] = field(default_factory=list)
    views: dict[str, FakeFrame] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def createDataFrame(self, table: object) -> FakeFrame:
        self.sent.append(table.nbytes)  # type: ignore[attr-defined]
        frame = FakeFrame(table.num_rows)  # type: ignore[attr-defined]
        frame.session = self  # type: ignore[attr-defined]
        return frame

    def table(self, name: str) -> FakeFrame:
        return FakeFrame(self.views[name].rows, (name,))

    @property
    def catalog(self) -> FakeSession:
        return self

    def dropTempView(self, name: str) -> None:
        self.dropped.append(name)


def test_rows_beyond_the_inline_share_go_ahead_in_pieces_as_views() -> None:
    import pyarrow as pa

    from worker.adapters.spark_sink import Staging

    spark = FakeSession()
    staging = Staging(spark, uuid4(), inline_bytes=100_000, piece_bytes=50_000)
    small = pa.table({"a": pa.array(range(1000), pa.int64())})  # 8 KB: inline
    big = pa.table({"a": pa.array(range(100_000), pa.int64())})  # 800 KB: pieces
    inline = staging.frame(small)
    staged = staging.frame(big)
    assert inline.rows == 1000 and inline.views == ()
    assert staged.rows == 100_000 and len(staged.views) == len(staging.views) >= 16
    assert spark.sent[0] == small.nbytes and max(spark.sent[1:]) <= 50_000  # every request under its piece size
    medium = pa.table({"a": pa.array(range(12_000), pa.int64())})  # 96 KB: over what is left inline
    again = staging.frame(medium)
    assert again.views and again.rows == 12_000
    staging.drop()
    assert sorted(spark.dropped) == sorted(spark.views) and not staging.views
