"""Table maintenance: the pure decisions, the routes block, and the orchestration's interleavings
with appends (the fake ledger's real lock semantics, a fake table whose calls can be held)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes import WRITING, BatchRow, FakeLedger
from worker.domain import maintenance as m
from worker.domain.errors import ConfigError, DataError
from worker.domain.maintenance import DataFile, MaintenancePolicy, Snapshot, StoredFile
from worker.maintenance import Maintainer
from worker.ports import Staged, TableState
from worker.routes import parse_routes

KB = 1024
T = "glue.db.events"
NOW_MS = 1_800_000_000_000

# -- the decisions ------------------------------------------------------------------------------


def snaps(*ages_s: int) -> list[Snapshot]:
    return [Snapshot(i + 1, NOW_MS - age * 1000) for i, age in enumerate(ages_s)]


def test_expiry_keeps_the_newest_minimum_even_when_all_are_old() -> None:
    policy = MaintenancePolicy(min_snapshots_to_keep=3, max_snapshot_age_s=60)
    history = snaps(500, 400, 300, 200, 100)  # ids 1..5, all older than 60 s
    assert m.expirable(history, keep={5}, policy=policy, now_ms=NOW_MS) == [1, 2]


def test_expiry_keeps_young_snapshots_and_the_protected_ones() -> None:
    policy = MaintenancePolicy(min_snapshots_to_keep=1, max_snapshot_age_s=250)
    history = snaps(500, 400, 300, 200, 100)
    assert m.expirable(history, keep={2, 5}, policy=policy, now_ms=NOW_MS) == [1, 3]


def test_expiry_with_age_zero_keeps_exactly_the_minimum() -> None:
    policy = MaintenancePolicy(min_snapshots_to_keep=2, max_snapshot_age_s=0)
    history = snaps(5, 4, 3, 2, 1)
    assert m.expirable(history, keep={5}, policy=policy, now_ms=NOW_MS) == [1, 2, 3]


def small(n: int, size: int = 10 * KB, prefix: str = "f") -> list[DataFile]:
    return [DataFile(f"s3://w/t/data/{prefix}{i:04d}.parquet", size, 100) for i in range(n)]


def test_nothing_is_compacted_below_the_minimum_count_of_small_files() -> None:
    policy = MaintenancePolicy(compact_min_files=5, target_file_size_mb=1)
    assert m.compaction_bins(small(4), policy) == []
    assert [len(b) for b in m.compaction_bins(small(5), policy)] == [5]


def test_bins_stay_within_the_target_and_large_files_are_left_alone() -> None:
    policy = MaintenancePolicy(compact_min_files=2, target_file_size_mb=1)  # small: < 768 KiB
    files = [*small(10, 300 * KB), DataFile("s3://w/t/data/big.parquet", 900 * KB, 5)]
    bins = m.compaction_bins(files, policy)
    assert [len(b) for b in bins] == [3, 3, 3]  # 3 × 300 KiB fit in 1 MiB, a 4th does not; the 10th is alone
    assert all(sum(f.size_bytes for f in b) <= policy.target_bytes for b in bins)
    assert all("big" not in f.path for b in bins for f in b)


def test_an_earlier_output_is_rewritten_only_once_as_many_new_bytes_join_it() -> None:
    """Size-tiered: a compacted file waits until the newer small files add up to its size."""
    policy = MaintenancePolicy(compact_min_files=5, target_file_size_mb=4)
    earlier = DataFile("s3://w/t/data/compacted.parquet", 1000 * KB, 10_000)
    (group,) = m.compaction_bins([earlier, *small(5, 10 * KB)], policy)
    assert earlier not in group and len(group) == 5
    (group,) = m.compaction_bins([earlier, *small(20, 60 * KB)], policy)  # 1200 KB of new files
    assert earlier in group and len(group) == 21
    assert [len(b) for b in m.compaction_bins([earlier, *small(16, 60 * KB)], policy)] == [16]  # 960 KB: not yet


def test_a_threshold_file_is_not_small() -> None:
    policy = MaintenancePolicy(compact_min_files=2, target_file_size_mb=1)
    at = DataFile("s3://w/t/data/at.parquet", policy.small_bytes, 1)
    below = DataFile("s3://w/t/data/below.parquet", policy.small_bytes - 1, 1)
    assert m.stats(1, [at, below], 1, 0, policy).small_files == 1


def test_expiry_cutoff_is_exact_to_the_millisecond() -> None:
    policy = MaintenancePolicy(min_snapshots_to_keep=0, max_snapshot_age_s=3600)
    at, past = Snapshot(1, NOW_MS - 3_600_000), Snapshot(2, NOW_MS - 3_600_001)
    assert m.expirable([at, past], keep=(), policy=policy, now_ms=NOW_MS) == [2]  # at the cut-off: kept


def test_bins_may_fill_the_target_exactly_bin_after_bin() -> None:
    policy = MaintenancePolicy(compact_min_files=2, target_file_size_mb=1)  # 4 × 256 KiB == 1 MiB
    assert [len(b) for b in m.compaction_bins(small(8, 256 * KB), policy)] == [4, 4]


def test_a_group_grows_while_each_file_is_no_larger_than_the_group_so_far() -> None:
    policy = MaintenancePolicy(compact_min_files=2, target_file_size_mb=64)
    sizes = lambda files: [[f.size_bytes // KB for f in b] for b in m.compaction_bins(files, policy)]  # noqa: E731
    # The second file always joins the first; later ones only while no larger than the group.
    tiers = [DataFile(f"s3://w/t/data/t{i}.parquet", size * KB, 1) for i, size in enumerate((10, 20, 40, 80))]
    assert sizes(tiers) == [[10, 20]]
    equal = [DataFile(f"s3://w/t/data/e{i}.parquet", size * KB, 1) for i, size in enumerate((10, 10, 20, 40))]
    assert sizes(equal) == [[10, 10, 20, 40]]  # as large as the group so far: joins


def test_a_file_at_the_small_threshold_is_never_compacted() -> None:
    policy = MaintenancePolicy(compact_min_files=3, target_file_size_mb=4)
    tiny = small(2)
    at = DataFile("s3://w/t/data/at.parquet", policy.small_bytes, 1)
    below = DataFile("s3://w/t/data/below.parquet", policy.small_bytes - 1, 1)
    assert m.compaction_bins([*tiny, at], policy) == []  # two small files: fewer than the minimum
    assert [len(b) for b in m.compaction_bins([*tiny, below], policy)] == [2]  # three: the tiny ones group


def test_stats_and_plan_as_reported_by_icefeed_maintain_json() -> None:
    policy = MaintenancePolicy(compact_min_files=2, target_file_size_mb=1)
    files = [DataFile("s3://w/t/data/a.parquet", 100, 3), DataFile("s3://w/t/data/b.parquet", 2 * 1024 * KB, 5)]
    assert m.stats(4, files, 2, 900, policy).as_dict() == {
        "snapshots": 4,
        "data_files": 2,
        "small_files": 1,
        "data_bytes": 100 + 2 * 1024 * KB,
        "records": 8,
        "manifests": 2,
        "metadata_bytes": 900,
    }
    planned = m.plan(snaps(9000, 10), [2], [*small(2, 10 * KB), *files], {}, policy, NOW_MS)
    assert planned.as_dict() == {
        "expire_snapshots": 0,  # the newest 10 are kept by default
        "compact_groups": [{"files": 3, "bytes": 100 + 20 * KB, "records": 203}],
        "set_properties": {
            "write.metadata.delete-after-commit.enabled": "true",
            "write.metadata.previous-versions-max": "20",
        },
    }


def test_orphans_are_unreferenced_and_older_than_the_cutoff() -> None:
    listed = [
        StoredFile("s3://w/t/data/referenced-old.parquet", 1, 10),
        StoredFile("s3://w/t/data/orphan-old.parquet", 1, 10),
        StoredFile("s3://w/t/data/orphan-young.parquet", 1, 1000),
        StoredFile("s3://w/t/data/at-cutoff.parquet", 1, 500),
    ]
    referenced = m.normalized(["s3a://w/t/data/referenced-old.parquet"])  # another spelling of s3://
    assert m.normalized(["s3n://w/t/x", "s3://w/t/y", "gs://w/t/z"]) == {"s3://w/t/x", "s3://w/t/y", "gs://w/t/z"}
    chosen = m.orphans(listed, referenced, cutoff_ms=500)
    assert [f.path for f in chosen] == ["s3://w/t/data/orphan-old.parquet"]


def test_the_plan_sets_only_the_properties_that_differ() -> None:
    policy = MaintenancePolicy(metadata_previous_versions=7)
    have = {"write.metadata.delete-after-commit.enabled": "true"}
    p = m.plan([], set(), [], have, policy, NOW_MS)
    assert p.properties == {"write.metadata.previous-versions-max": "7"}


# -- the routes block ---------------------------------------------------------------------------

ROUTE = """
[[ingestion]]
name = "events"
bucket = "landing"
prefix = "events/"
format = "json"
table = "glue.db.events"
location = "s3://wh/db/events"

[[ingestion]]
name = "clicks"
bucket = "landing"
prefix = "clicks/"
format = "json"
table = "glue.db.clicks"
location = "s3://wh/db/clicks"
"""


def test_maintenance_defaults_and_per_table_overrides() -> None:
    routes = parse_routes(
        ROUTE
        + """
[maintenance]
min_snapshots_to_keep = 30
[maintenance.tables."glue.db.clicks"]
enabled = false
target_file_size_mb = 128
"""
    )
    events, clicks = routes.maintenance.policy("glue.db.events"), routes.maintenance.policy("glue.db.clicks")
    assert (events.enabled, events.min_snapshots_to_keep, events.target_file_size_mb) == (True, 30, 512)
    assert (clicks.enabled, clicks.min_snapshots_to_keep, clicks.target_file_size_mb) == (False, 30, 128)
    assert routes.tables == ["glue.db.events", "glue.db.clicks"]
    assert parse_routes(ROUTE).maintenance.policy(T) == MaintenancePolicy()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ('[maintenance.tables."glue.db.nope"]\nenabled = false', "glue.db.nope is not a table of any ingestion"),
        (
            "[maintenance]\norphan_min_age_s = 60",
            "maintenance.orphan_min_age_s: Input should be greater than or equal to 600",
        ),
        (
            "[maintenance]\ncompact_min_files = 1",
            "maintenance.compact_min_files: Input should be greater than or equal to 2",
        ),
        ("[maintenance]\nmin_snapshot = 3", "maintenance.min_snapshot: Extra inputs are not permitted"),
    ],
)
def test_bad_maintenance_settings_name_the_field(block: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_routes(ROUTE + block)
    assert message in str(caught.value)


# -- the orchestration --------------------------------------------------------------------------


@dataclass
class FakeTables:
    """A table's files and snapshots in memory; ``hold`` pauses a named call until released."""

    files: list[DataFile] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)  # path → modified ms (listing)
    referenced_extra: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    hold: dict[str, threading.Event] = field(default_factory=dict)
    reached: dict[str, threading.Event] = field(default_factory=dict)
    exists: bool = True

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hold:
            self.reached.setdefault(name, threading.Event()).set()
            assert self.hold[name].wait(10), f"{name} was never released"

    def state(self, table: str) -> TableState:
        self._call("state")
        if not self.exists:
            raise DataError(f"table {table} does not exist (yet)", error_class="NoSuchTable")
        keep = {max(s.snapshot_id for s in self.snapshots)} if self.snapshots else set()
        return TableState(
            table, "s3://w/t", list(self.snapshots), keep, list(self.files), 0, 1, 1000, dict(self.properties)
        )

    def set_properties(self, table: str, properties: dict[str, str]) -> None:
        self._call("set_properties")
        self.properties.update(properties)

    def expire(self, table: str, policy: MaintenancePolicy, now_ms: int) -> int:
        self._call("expire")
        keep = {max(s.snapshot_id for s in self.snapshots)}
        ids = set(m.expirable(self.snapshots, keep, policy, now_ms))
        self.snapshots = [s for s in self.snapshots if s.snapshot_id not in ids]
        return len(ids)

    def stage(self, state: TableState, paths: list[str], policy: MaintenancePolicy) -> Staged:
        self._call("stage")
        path = f"s3://w/t/data/compact-{uuid.uuid4().hex[:6]}.parquet"
        records = sum(f.records for f in state.files if f.path in paths)
        self.objects[path] = NOW_MS
        return Staged(path, records, 1, None)

    def replace(self, state: TableState, paths: list[str], staged: Staged) -> bool:
        self._call("replace")
        live = {f.path for f in self.files}
        if not set(paths) <= live:
            return False
        self.files = [f for f in self.files if f.path not in paths] + [DataFile(staged.path, 1, staged.records)]
        return True

    def listing(self, table: str) -> list[StoredFile]:
        self._call("listing")
        return [StoredFile(p, 1, t) for p, t in self.objects.items()]

    def referenced(self, table: str, cancelled: Any = None) -> set[str]:
        self._call("referenced")
        return {f.path for f in self.files} | self.referenced_extra

    def delete(self, table: str, paths: list[str]) -> int:
        self._call("delete")
        self.deleted += paths
        for p in paths:
            self.objects.pop(p, None)
        return len(paths)


POLICY = MaintenancePolicy(
    compact_min_files=3, target_file_size_mb=1, min_snapshots_to_keep=2, max_snapshot_age_s=0, max_lock_wait_s=0.3
)


def tables_with(n_files: int = 4, n_snapshots: int = 5) -> FakeTables:
    t = FakeTables(files=small(n_files), snapshots=snaps(*range(n_snapshots * 10, 0, -10)))
    t.properties = POLICY.table_properties()
    return t


def maintainer(ledger: FakeLedger, tables: FakeTables, owner: str = "w1") -> Maintainer:
    return Maintainer(ledger, tables, owner, clock=lambda: NOW_MS / 1000, lease_ttl_s=60)


async def test_a_run_expires_compacts_and_checks_orphans_in_that_order() -> None:
    ledger, tables = FakeLedger(), tables_with()
    tables.properties = {}
    tables.objects = {"s3://w/t/data/lost.parquet": 0, **{f.path: 0 for f in tables.files}}
    report = await maintainer(ledger, tables).run(T, POLICY)
    assert report.outcome == "done", report.steps
    assert [s["step"] for s in report.steps] == ["properties", "expire", "compact", "orphans"]
    assert [s["outcome"] for s in report.steps] == ["done"] * 4
    assert len(tables.snapshots) == 2 and report.steps[1]["expired"] == 3
    assert len(tables.files) == 1 and tables.files[0].records == 400
    assert tables.deleted == sorted(["s3://w/t/data/lost.parquet", *(f.path for f in small(4))])
    row = ledger.maintenance[T]
    assert (row["owner"], row["outcome"]) == (None, "done") and row["orphans_at"] is not None
    assert row["stats"]["data_files"] == 1 and report.stats is not None and report.stats["data_files"] == 4


async def test_a_table_not_due_or_maintained_elsewhere_is_left_alone() -> None:
    ledger, tables = FakeLedger(), tables_with()
    assert (await maintainer(ledger, tables, "w1").run(T, POLICY)).outcome == "done"
    tables.calls.clear()
    again = await maintainer(ledger, tables, "w2").run(T, POLICY)  # due again only after the interval
    assert (again.outcome, tables.calls) == ("skipped", [])
    ledger.maintenance[T].update(owner="w3", expires=ledger.clock() + 60)  # another worker, right now
    forced = await maintainer(ledger, tables, "w2").run(T, POLICY, force=True)
    assert (forced.outcome, tables.calls) == ("skipped", [])
    assert "another worker" in forced.reason


async def test_a_dead_maintainers_lease_comes_back_after_it_expires() -> None:
    ledger, tables = FakeLedger(), tables_with()
    ledger.maintenance[T] = {
        "owner": "dead",
        "expires": ledger.clock() - 1,
        "started": ledger.clock() - 1000,
        "orphans_at": None,
    }
    assert (await maintainer(ledger, tables).run(T, POLICY)).outcome == "done"


async def test_no_commit_while_a_fenced_append_may_still_run() -> None:
    """A writer fenced, then lost its lock (its append may still be running): every committing
    step is skipped; the staged file, never referenced, is deleted at once."""
    ledger, tables = FakeLedger(), tables_with()
    tables.properties = {}
    batch = uuid.uuid4()
    ledger.batches[batch] = BatchRow(batch, "events", T, WRITING, "w9", ledger.clock() + 60, 1)
    ledger.batches[batch].write_started_at = ledger.clock()
    ledger.writers[T] = batch
    report = await maintainer(ledger, tables).run(T, POLICY)
    assert [(s["step"], s["outcome"]) for s in report.steps] == [
        ("properties", "skipped"),
        ("expire", "skipped"),
        ("compact", "skipped"),
        ("orphans", "skipped"),  # a running append's files are not referenced yet
    ]
    assert all("append of the table may still be running" in s["reason"] for s in report.steps)
    assert "listing" not in tables.calls
    assert "replace" not in tables.calls and "set_properties" not in tables.calls and "expire" not in tables.calls
    assert len(tables.files) == 4 and len(tables.snapshots) == 5
    assert any(p.startswith("s3://w/t/data/compact-") for p in tables.deleted)


async def test_an_append_holding_the_lock_delays_the_swap_and_a_busy_table_skips_it() -> None:
    ledger, tables = FakeLedger(), tables_with()
    async with ledger.table_lock(T, 1):  # an append commits during the whole run
        report = await maintainer(ledger, tables).run(T, POLICY)
    locked = [s for s in report.steps if s["step"] in ("expire", "compact")]
    assert [s["outcome"] for s in locked] == ["skipped", "skipped"]
    assert all("stayed busy" in s["reason"] for s in locked)
    assert "replace" not in tables.calls and len(tables.files) == 4


async def test_the_swap_waits_for_the_append_then_commits() -> None:
    """Staging runs outside the lock; the swap waits for an append that holds it, and runs
    once it is released (an event, not a timer)."""
    ledger, tables = FakeLedger(), tables_with(n_snapshots=1)
    tables.hold["stage"] = threading.Event()
    run = asyncio.create_task(
        maintainer(ledger, tables).run(T, MaintenancePolicy(**{**POLICY.__dict__, "max_lock_wait_s": 30}))
    )
    await asyncio.to_thread(lambda: tables.reached.setdefault("stage", threading.Event()).wait(5))
    async with ledger.table_lock(T, 1):
        tables.hold["stage"].set()  # staged: now the swap asks for the lock this append holds
        for _ in range(20):
            await asyncio.sleep(0)
        assert "replace" not in tables.calls
    report = await run
    compact = next(s for s in report.steps if s["step"] == "compact")
    assert compact["outcome"] == "done" and "replace" in tables.calls
    assert len(tables.files) == 1


async def test_a_source_file_gone_before_the_swap_leaves_the_table_as_it_is() -> None:
    """A replace or the audit removed one of the group's files while it was being staged."""
    ledger, tables = FakeLedger(), tables_with(n_snapshots=1)
    tables.hold["stage"] = threading.Event()
    run = asyncio.create_task(maintainer(ledger, tables).run(T, POLICY))
    await asyncio.to_thread(lambda: tables.reached.setdefault("stage", threading.Event()).wait(5))
    gone = tables.files.pop(0)
    tables.hold["stage"].set()
    report = await run
    compact = next(s for s in report.steps if s["step"] == "compact")
    assert (compact["outcome"], compact["reason"]) == ("skipped", "a source file is no longer live")
    assert gone not in tables.files and len(tables.files) == 3
    assert any(p.startswith("s3://w/t/data/compact-") for p in tables.deleted)


async def test_a_lost_lock_connection_stops_the_commit() -> None:
    ledger, tables = FakeLedger(), tables_with(n_snapshots=1)
    original = ledger.table_lock

    def dying(table: str, timeout_s: float) -> Any:
        class Dying:
            async def __aenter__(self) -> Any:
                self.inner = original(table, timeout_s)
                lock = await self.inner.__aenter__()
                ledger.kill_connection(lock)
                return lock

            async def __aexit__(self, *exc: object) -> None:
                await self.inner.__aexit__(*exc)

        return Dying()

    ledger.table_lock = dying  # type: ignore[method-assign]
    report = await maintainer(ledger, tables).run(T, POLICY)
    compact = next(s for s in report.steps if s["step"] == "compact")
    assert compact["outcome"] == "failed" and "lock connection lost" in compact["error"]
    assert "replace" not in tables.calls and len(tables.files) == 4


async def test_a_lost_maintenance_lease_stops_the_run() -> None:
    """Another worker took the table over (this one was frozen past its lease): the swap in
    progress is skipped, and no further group is staged."""
    seen: list[str] = []
    ledger = FakeLedger(on_change=lambda what, _: seen.append(what))
    tables = tables_with(n_files=8, n_snapshots=1)
    tables.files = small(4, 300 * KB, "a") + small(4, 300 * KB, "b")  # two groups of 3 and one of 2
    tables.hold["stage"] = threading.Event()
    quick = Maintainer(ledger, tables, "w1", clock=lambda: NOW_MS / 1000, lease_ttl_s=1)
    run = asyncio.create_task(quick.run(T, POLICY))
    await asyncio.to_thread(lambda: tables.reached.setdefault("stage", threading.Event()).wait(5))
    ledger.maintenance[T]["owner"] = "w2"
    deadline = asyncio.get_running_loop().time() + 5
    while "maintenance_lease_lost" not in seen:
        assert asyncio.get_running_loop().time() < deadline, "the lease was never renewed"
        await asyncio.sleep(0.02)
    tables.hold["stage"].set()
    report = await run
    compacts = [s for s in report.steps if s["step"] == "compact"]
    assert [(s["outcome"], s["reason"]) for s in compacts] == [("skipped", "the maintenance lease was lost")]
    assert tables.calls.count("stage") == 1 and "replace" not in tables.calls and "listing" not in tables.calls


async def test_a_missing_table_is_skipped_not_failed() -> None:
    ledger, tables = FakeLedger(), tables_with()
    tables.exists = False
    report = await maintainer(ledger, tables).run(T, POLICY)
    assert (report.outcome, ledger.maintenance[T]["outcome"]) == ("skipped", "skipped")
    assert "does not exist" in report.reason


async def test_a_failed_step_fails_the_run_and_the_others_still_run() -> None:
    ledger, tables = FakeLedger(), tables_with()

    def broken(*_: object) -> int:
        raise RuntimeError("catalog said no")

    tables.expire = broken  # type: ignore[method-assign]
    report = await maintainer(ledger, tables).run(T, POLICY)
    assert report.outcome == "failed" and "expire: RuntimeError: catalog said no" in report.reason
    assert [(s["step"], s["outcome"]) for s in report.steps][1:] == [("compact", "done"), ("orphans", "done")]
    assert ledger.maintenance[T]["outcome"] == "failed"


async def test_orphans_are_checked_only_when_due() -> None:
    ledger, tables = FakeLedger(), tables_with(n_files=0, n_snapshots=1)
    await maintainer(ledger, tables).run(T, POLICY)
    assert "listing" in tables.calls
    tables.calls.clear()
    ledger.maintenance[T]["started"] = ledger.clock() - POLICY.check_interval_s - 1
    await maintainer(ledger, tables).run(T, POLICY)
    assert "state" in tables.calls and "listing" not in tables.calls


async def test_dry_run_changes_nothing_and_takes_no_lease() -> None:
    ledger, tables = FakeLedger(), tables_with()
    report = await maintainer(ledger, tables).run(T, POLICY, dry_run=True)
    assert tables.calls == ["state"] and T not in ledger.maintenance
    assert report.plan is not None and report.plan["expire_snapshots"] == 3
    assert [g["files"] for g in report.plan["compact_groups"]] == [4]


async def test_a_table_that_cannot_be_read_is_a_failed_run_and_counted() -> None:
    from prometheus_client import CollectorRegistry

    from worker.observability.metrics import Metrics

    ledger, tables = FakeLedger(), tables_with()

    def away(table: str) -> TableState:
        raise OSError("catalog unreachable")

    tables.state = away  # type: ignore[method-assign]
    metrics = Metrics(CollectorRegistry())
    report = await Maintainer(ledger, tables, "w1", metrics, clock=lambda: NOW_MS / 1000).run(T, POLICY)
    assert (report.outcome, [s["step"] for s in report.steps]) == ("failed", ["inspect"])
    assert "catalog unreachable" in report.reason and ledger.maintenance[T]["outcome"] == "failed"
    sample = metrics.registry.get_sample_value(
        "icefeed_maintenance_runs_total", {"table": T, "step": "inspect", "outcome": "failed"}
    )
    assert sample == 1.0


async def test_a_run_interrupted_by_shutdown_is_recorded_as_such() -> None:
    ledger, tables = FakeLedger(), tables_with(n_snapshots=1)
    tables.hold["stage"] = threading.Event()
    run = asyncio.create_task(maintainer(ledger, tables).run(T, POLICY))
    await asyncio.to_thread(lambda: tables.reached.setdefault("stage", threading.Event()).wait(5))
    run.cancel()
    tables.hold["stage"].set()
    with pytest.raises(asyncio.CancelledError):
        await run
    row = ledger.maintenance[T]
    assert (row["owner"], row["outcome"], row["error"]) == (None, "skipped", None)
    assert "replace" not in tables.calls
