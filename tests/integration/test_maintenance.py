"""Table maintenance on the real stack (moto + Sail + Glue on moto + PostgreSQL), every table
checked with pyiceberg: compaction keeps rows and lineage exactly while another worker appends,
expiry keeps the configured minimum, orphan removal deletes only old unreferenced files, and a
maintainer killed mid-compaction leaves the table readable and exact."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness import Env, make_env, poll
from worker.localstack import Stack

pytestmark = pytest.mark.integration

ROUTES = """
[[ingestion]]
name = "events"
bucket = "{bucket}"
prefix = "events/"
suffix = ".json"
format = "json"
table = "glue.{db}.events"
location = "s3://{warehouse}/{db}/events"

[maintenance]
check_interval_s = CHECK
min_snapshots_to_keep = 3
max_snapshot_age_s = 0
target_file_size_mb = 1
compact_min_files = 2
"""

ONE_FILE_PER_COMMIT = {"ICEFEED_BATCH_MAX_FILES": "1", "ICEFEED_BATCH_MAX_WAIT_S": "0.2"}


@pytest.fixture
def menv(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    check = getattr(request, "param", 3600)  # 3600: the tests run maintenance with `icefeed maintain`
    e = make_env(stack, tmp_path, f"m{int(time.time() * 1000) % 10**9:09d}", routes=ROUTES.replace("CHECK", str(check)))
    try:
        yield e
    finally:
        e.close()


def put_file(env: Env, n: int, rows: int = 5) -> str:
    body = "\n".join(json.dumps({"id": n * 1000 + i, "file": n, "v": f"r{i}"}) for i in range(rows)) + "\n"
    key = f"events/f{n:03d}.json"
    env.put(key, body.encode())
    return key


def lineage(env: Env) -> Counter[tuple[Any, ...]]:
    """Every row with its lineage columns, as a multiset (pyiceberg, not the engine)."""
    return Counter(
        (r["id"], r["file"], r["v"], r["_source_file"], r["_batch_id"], str(r["_ingested_at"]))
        for r in env.table_rows("events")
    )


def data_files(env: Env) -> list[Any]:
    return [task.file for task in env.table("events").scan().plan_files()]


def maintain(env: Env, *args: str) -> dict[str, Any]:
    result = env.cli("maintain", "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


def steps(report: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s["outcome"] for t in report["tables"] for s in t["steps"]}


def test_compaction_keeps_rows_and_lineage_while_another_worker_appends(menv: Env) -> None:
    env = menv
    table = f"glue.{env.db}.events"
    env.migrate()
    env.start_worker(**ONE_FILE_PER_COMMIT)
    for n in range(6):
        put_file(env, n)
    env.wait_files(6)
    before = lineage(env)
    assert sum(before.values()) == 30 and len(data_files(env)) >= 4

    # Appends go on from the worker while `icefeed maintain` (another process) compacts.
    later = [put_file(env, n) for n in range(6, 12)]
    during = [maintain(env, "--table", table) for _ in range(2)]
    env.wait_files(12)
    assert any(steps(r).get("compact") == "done" for r in during), during
    assert env.stop_workers() == [0]

    after = lineage(env)
    assert +(before - after) == Counter(), "a row loaded before the compaction changed or vanished"
    assert sum(after.values()) == 60 and len(after) == 60, "lost or duplicated rows"
    ledger = {f"s3://{env.bucket}/{f['key']}": f for f in env.files()}
    assert {k for k in ledger if k.endswith(tuple(later))} and all(f["status"] == "LOADED" for f in ledger.values())
    for row in after:
        source, batch = row[3], row[4]
        assert ledger[source]["batch_id"] is not None and str(ledger[source]["batch_id"]) == batch, row
        assert row[1] == int(source.rsplit("/f", 1)[1].split(".")[0])  # each row under its own file

    # Quiet now: one more run compacts what the appends added; another keeps exactly the minimum.
    last = maintain(env, "--table", table)
    assert len(data_files(env)) == 1 and lineage(env) == after, last
    import pyarrow.parquet as pq

    tbl = env.table("events")
    with tbl.io.new_input(data_files(env)[0].file_path).open() as f:
        assert pq.read_metadata(f).num_row_groups == 1  # one row group, not one per small file
    # The manifests: the compacted file's and this last swap's record of what it removed; the
    # earlier swaps' records are not carried on (planning reads every manifest listed).
    manifests = tbl.current_snapshot().manifests(tbl.io)
    assert len(manifests) <= 2, [(m.manifest_path, m.added_files_count, m.existing_files_count) for m in manifests]
    maintain(env, "--table", table)
    assert len(env.table("events").metadata.snapshots) == 3  # min_snapshots_to_keep, every one older than 0 s

    # The exactly-once probe (rows of a batch by _batch_id, through the engine: the recovery
    # path's own call) still finds each file in the compacted table.
    from uuid import UUID

    from worker.adapters.spark_sink import SparkSink
    from worker.settings import SparkSettings

    sink = SparkSink(SparkSettings(url=env.stack.spark_url, dialect="sail"))
    try:
        for source, f in list(ledger.items())[:3]:
            counts = asyncio.run(sink.batch_counts(table, UUID(str(f["batch_id"]))))
            assert counts == {source: f["rows_loaded"]}, (source, counts)
    finally:
        sink.close()

    status = env.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    health = {t["table"]: t for t in orjson.loads(status.stdout)["tables"]}
    assert health[table]["maintenance"] == "done" and health[table]["stats"]["data_files"] == 1


def test_dry_run_shows_the_plan_and_changes_nothing(menv: Env) -> None:
    env = menv
    env.migrate()
    env.start_worker(**ONE_FILE_PER_COMMIT)
    for n in range(5):
        put_file(env, n)
    env.wait_files(5)
    assert env.stop_workers() == [0]
    metadata = env.table("events").metadata_location
    report = maintain(env, "--dry-run")
    (t,) = report["tables"]
    assert t["stats"]["data_files"] == 5 and t["plan"]["compact_groups"][0]["files"] == 5
    assert t["plan"]["expire_snapshots"] == 2  # 5 snapshots, 3 kept
    assert env.table("events").metadata_location == metadata and env.sql("SELECT * FROM table_maintenance") == []
    text = env.cli("maintain", "--dry-run")
    assert "would expire 2 snapshot(s), compact 5 small file(s) in 1 group(s)" in text.stdout, text.stdout


def test_orphan_removal_keeps_referenced_and_young_files(menv: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.adapters.iceberg_maintenance import IcebergMaintainer
    from worker.adapters.pg_operator import operator_ledger
    from worker.maintenance import Maintainer
    from worker.settings import IcebergSettings, PgSettings

    env = menv
    env.migrate()
    env.start_worker(**ONE_FILE_PER_COMMIT)
    for n in range(3):
        put_file(env, n)
    env.wait_files(3)
    assert env.stop_workers() == [0]
    rows = lineage(env)
    location = env.table("events").metadata.location.rstrip("/")
    bucket, prefix = location.removeprefix("s3://").split("/", 1)

    def modified(key: str) -> float:
        return float(env.s3.head_object(Bucket=bucket, Key=key)["LastModified"].timestamp())

    old_key, young_key = f"{prefix}/data/orphan-old.parquet", f"{prefix}/metadata/orphan-young.avro"
    env.s3.put_object(Bucket=bucket, Key=old_key, Body=b"not referenced")
    old_at = modified(old_key)
    poll(lambda: time.time() >= old_at + 2, 10, "the clock to move past the first orphan")
    env.s3.put_object(Bucket=bucket, Key=young_key, Body=b"not referenced either")
    assert modified(young_key) >= old_at + 1
    everything = {o["Key"]: o for o in env.s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]}

    policy_age = env.routes.maintenance.policy(f"glue.{env.db}.events").orphan_min_age_s
    cutoff_s = old_at + 1  # the first orphan is older than the safety age, the second younger
    worker_env = env.worker_env()
    catalog = json.loads(worker_env["ICEFEED_ICEBERG_CATALOG"])
    for name, value in worker_env.items():  # the catalog's credentials come from the AWS chain, as in a worker
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)

    async def run() -> Any:
        settings = PgSettings(dsn=env.stack.pg_dsn, ledger_schema=env.schema)
        async with operator_ledger(settings) as db:
            maintainer = Maintainer(
                db.worker_ledger(),
                IcebergMaintainer(IcebergSettings(catalog=catalog)),
                "test",
                clock=lambda: cutoff_s + policy_age,
            )
            return await maintainer.run(
                f"glue.{env.db}.events", env.routes.maintenance.policy(f"glue.{env.db}.events"), force=True
            )

    report = asyncio.run(run())
    orphans = next(s for s in report.steps if s["step"] == "orphans")
    assert (orphans["outcome"], orphans["deleted"]) == ("done", 1), report.steps
    left = {o["Key"] for o in env.s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]}
    assert old_key not in left and young_key in left
    assert set(everything) - left == {old_key}, "only the old orphan may go"
    for f in data_files(env):
        assert f.file_path.removeprefix(f"s3://{bucket}/") in left
    assert lineage(env) == rows


@pytest.mark.parametrize("point", ["maintain_staged", "maintain_committed"])
def test_a_maintainer_killed_mid_compaction_leaves_the_table_exact(menv: Env, point: str) -> None:
    env = menv
    table = f"glue.{env.db}.events"
    env.migrate()
    env.start_worker("loader", **ONE_FILE_PER_COMMIT)
    for n in range(5):
        put_file(env, n)
    env.wait_files(5)
    assert env.stop_workers() == [0]
    rows = lineage(env)
    # A worker whose maintenance comes round within seconds: it stages the compaction and dies
    # at the point (before the swap, or right after it, before the ledger hears of it).
    eager = env.tmp / "routes-eager.toml"
    eager.write_text(env.routes_file.read_text().replace("check_interval_s = 3600", "check_interval_s = 5"))
    dying = env.start_worker(
        "maintainer",
        ICEFEED_ROUTES_FILE=str(eager),
        ICEFEED_FAULTS=f"{point}=exit",
        ICEFEED_LEASE_MAINTENANCE_TTL_S="10",
    )
    poll(lambda: dying.poll() is not None, 90, f"the worker to die at {point}")
    assert dying.returncode == 137, env.worker_logs()[-3000:]
    env.workers.remove(dying)
    assert lineage(env) == rows
    assert len(data_files(env)) == (5 if point == "maintain_staged" else 1)
    (held,) = env.sql("SELECT lease_owner FROM table_maintenance")
    assert held["lease_owner"].startswith("maintainer-")  # the dead worker's lease, until it lapses

    # The lease lapses (10 s); then `icefeed maintain` takes the table and finishes the job.
    report = poll(
        lambda: (r := maintain(env, "--table", table)) and r["tables"][0]["outcome"] == "done" and r,
        60,
        "the dead maintainer's lease to lapse",
        interval=1,
    )
    assert lineage(env) == rows and len(data_files(env)) == 1, report
