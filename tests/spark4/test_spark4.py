"""The pipeline on Apache Spark 4.0 Connect (Parquet tables): inference of JSON lines, whole-file
JSON and CSV, batching (several files → one commit), exact lineage per file (nasty keys included),
schema evolution (a new column by ALTER TABLE; a type conflict quarantined), and the ledger.
Tables are read back from their Parquet files with pyarrow, and through Spark."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from tests.spark4.support import Spark4Env, Spark4Server

pytestmark = pytest.mark.spark4


def jsonl(*rows: dict) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


# Keys Hadoop's Path would misread unless the dialect escapes them: a glob (`*` also matched the
# bait `starX.json`), `?`, `[…]`, `{a,b}`, and a literal `%20` (Sail wants it percent-encoded).
EVENT_KEYS = [
    "events/2026/11/file 0+x.json",
    "events/2026/11/pct%20lit.json",
    "events/2026/11/star*.json",
    "events/2026/11/starX.json",
    "events/2026/11/br[1]{a,b}?.json",
]


@pytest.mark.parametrize(
    "worker_read_max_bytes",
    [
        pytest.param("0", id="engine-reads-all"),  # Spark's own JSON reader, FAILFAST
        pytest.param("8388608", id="worker-reads-json"),  # the default: JSON decoded by the worker
    ],
)
def test_files_load_in_one_commit_per_table_with_exact_lineage(s4env: Spark4Env, worker_read_max_bytes: str) -> None:
    env = s4env
    env.migrate()
    expected: Counter[tuple[int, str]] = Counter()
    for i, key in enumerate(EVENT_KEYS):
        env.put(key, jsonl(*({"id": i * 100 + j, "kind": "click", "v": j * 0.5} for j in range(i + 1))))
        expected.update((i * 100 + j, f"s3://{env.bucket}/{key}") for j in range(i + 1))
    env.put("events/broken.json", b'{"id": 1}\n{"id": \n')
    env.put("people/p.csv", b"name,age,joined\nada,36,2026-01-02\nalan,41,2025-12-31\n")
    env.put("docs/array.json", json.dumps([{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}], indent=2).encode())
    # everything is queued: one batch per table
    env.start_worker(ICEFEED_BATCH_MAX_WAIT_S="3", ICEFEED_SPARK_WORKER_READ_MAX_BYTES=worker_read_max_bytes)

    files = {f["key"]: f for f in env.wait_files(8, timeout=180)}
    outcome = {k: (f["status"], f["rows_loaded"], f["error_class"]) for k, f in files.items()}
    assert outcome == {
        **{key: ("LOADED", i + 1, None) for i, key in enumerate(EVENT_KEYS)},
        "events/broken.json": ("FAILED", None, "ParseError"),  # engine: FAILFAST, no _corrupt_record column
        "people/p.csv": ("LOADED", 2, None),
        "docs/array.json": ("LOADED", 2, None),
    }
    batches = {r["id"]: r for r in env.sql("SELECT id, table_name, status, files, rows_loaded FROM batches")}
    assert {b["status"] for b in batches.values()} == {"COMMITTED"}
    (events_batch,) = {files[k]["batch_id"] for k in EVENT_KEYS}  # five files, one batch
    assert batches[events_batch]["rows_loaded"] == 15
    assert len(batches) == 3, batches  # events, people, documents: one commit each

    # The Parquet files, read with pyarrow: one data file per commit, exact lineage per file.
    assert len(env.data_files("events")) == 1
    events = env.arrow("events")
    assert "_corrupt_record" not in events.column_names
    rows = events.to_pylist()
    assert Counter((r["id"], r["_source_file"]) for r in rows) == expected
    assert {r["_batch_id"] for r in rows} == {str(events_batch)}
    assert all(r["_ingested_at"] is not None for r in rows)
    people = env.arrow("people")
    assert people.schema.field("age").type == pa.int32() and people.schema.field("joined").type == pa.date32()
    assert sorted((r["name"], r["age"], r["joined"].isoformat()) for r in people.to_pylist()) == [
        ("ada", 36, "2026-01-02"),
        ("alan", 41, "2025-12-31"),
    ]
    assert sorted((r["id"], r["tags"]) for r in env.table_rows("documents")) == [(1, ["a", "b"]), (2, [])]

    # The same through the engine.
    assert env.spark_table("events").count() == 15
    assert env.stop_workers() == [0]
    assert env.queue_depth() == 0


def test_a_new_column_evolves_the_table_and_a_type_conflict_is_quarantined(s4env: Spark4Env) -> None:
    env = s4env
    env.migrate()
    env.start_worker(ICEFEED_BATCH_MAX_WAIT_S="2")
    env.put("events/a.json", jsonl({"id": 1, "price": 1.5}))
    (first,) = env.wait_files(1, timeout=120)
    assert (first["status"], first["rows_loaded"]) == ("LOADED", 1)

    env.put("events/b.json", jsonl({"id": 2, "price": 2.5, "color": "red"}, {"id": 3, "price": 3.0}))
    env.put("events/c.json", jsonl({"id": 4, "price": "cheap"}))
    env.put("events/d.json", jsonl({"id": 5}))
    files = {f["key"]: f for f in env.wait_files(4, timeout=120)}
    assert {k: (f["status"], f["rows_loaded"]) for k, f in files.items()} == {
        "events/a.json": ("LOADED", 1),
        "events/b.json": ("LOADED", 2),
        "events/c.json": ("QUARANTINED", 0),
        "events/d.json": ("LOADED", 1),
    }
    assert len({files[k]["batch_id"] for k in ("events/b.json", "events/c.json", "events/d.json")}) == 1
    bad = files["events/c.json"]
    assert bad["error_class"] == "SchemaConflict"
    assert "type conflict at price: double (table) vs string (file)" in bad["error_message"]

    # ALTER TABLE ADD COLUMNS, then the append: two commits, two data files; old rows read null.
    assert len(env.data_files("events")) == 2
    rows = {r["id"]: r for r in env.table_rows("events")}
    assert set(rows) == {1, 2, 3, 5}
    assert [(rows[i]["price"], rows[i]["color"]) for i in (1, 2, 3, 5)] == [
        (1.5, None),
        (2.5, "red"),
        (3.0, None),
        (None, None),
    ]
    assert {r["_source_file"] for r in rows.values()} == {f"s3://{env.bucket}/events/{k}.json" for k in "abd"}
    spark_types = dict(env.spark_table("events").dtypes)
    assert (spark_types["price"], spark_types["color"]) == ("double", "string")

    versions = json.loads(env.cli("schema", "show", "events", "--json").stdout)["versions"]
    assert [[c["kind"] for c in v["changes"]] for v in versions[1:]] == [["column_added"]]
    (proposal,) = json.loads(env.cli("schema", "pending", "--json").stdout)["proposals"]
    assert proposal["keys"] == ["events/c.json"]
    assert env.stop_workers() == [0]


def test_a_replace_route_on_a_parquet_table_is_refused_at_start(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[ingestion]]\nname = "snapshots"\nbucket = "landing"\nformat = "json"\n'
        'table = "spark_catalog.db.snap"\nlocation = "file:///tmp/wh/snap"\non_overwrite = "replace"\n'
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "ICEFEED_SQS_QUEUE_URLS": "http://127.0.0.1:9/queue/q",
        "ICEFEED_ROUTES_FILE": str(routes),
        "ICEFEED_SPARK_DIALECT": "spark",
        "ICEFEED_SPARK_TABLE_FORMAT": "parquet",
        "ICEFEED_HTTP_PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert 'snapshots: on_overwrite = "replace" deletes rows' in result.stderr
    assert "ICEFEED_SPARK_TABLE_FORMAT=parquet" in result.stderr


def test_spark_has_file_metadata_but_it_is_not_the_lineage_value(spark4: Spark4Server, tmp_path: Path) -> None:
    """Why ``_source_file`` stays a literal on Spark too: ``_metadata.file_path`` exists there
    (not on Sail) but is the engine's URI-encoded path, not the object's ``s3://bucket/key``."""
    from worker.adapters.dialects import Dialect

    dialect = Dialect("spark", "parquet", f"file://{tmp_path}")
    target = tmp_path / "b" / "in" / "a b*.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(jsonl({"id": 1}))
    (tmp_path / "b" / "in" / "a bX.json").write_bytes(jsonl({"id": 2}))  # glob bait
    assert dialect.has_file_metadata
    df = spark4.session.read.format("json").options(**dialect.read_options("json", {}))
    rows = df.load(dialect.source_path("b", "in/a b*.json")).select("id", "_metadata.file_path").collect()
    assert [(r["id"], r["file_path"]) for r in rows] == [(1, f"file:{tmp_path}/b/in/a%20b*.json")]


async def test_a_probe_sees_a_commit_made_by_another_session(spark4: Spark4Server, tmp_path: Path) -> None:
    """Recovery asks the table whether a dead worker's batch landed. A long-lived Spark session
    caches a v1 table's file listing: without a refresh it answers "no rows", and the batch's
    files would be loaded twice."""
    import uuid

    from pydantic import SecretStr

    from worker.adapters.spark_sink import SparkSink
    from worker.settings import SparkSettings

    db, batch = f"db_probe_{uuid.uuid4().hex[:8]}", uuid.uuid4()
    table = f"spark_catalog.{db}.t"
    spark4.session.sql(f"CREATE DATABASE {db}")
    spark4.session.sql(
        f"CREATE TABLE {table} (id BIGINT, _source_file STRING, _batch_id STRING, _ingested_at TIMESTAMP) "
        f"USING parquet LOCATION 'file://{tmp_path}/t'"
    )
    sink = SparkSink(SparkSettings(url=SecretStr(spark4.url), dialect="spark", table_format="parquet"))
    try:
        assert await sink.batch_counts(table, batch) == {}  # the sink's session has now seen the table
        rows = pa.table({"id": [1, 2], "_source_file": ["s3://b/k"] * 2, "_batch_id": [str(batch)] * 2})
        other = spark4.session.createDataFrame(rows).selectExpr("*", "current_timestamp() AS _ingested_at")
        other.write.mode("append").format("parquet").saveAsTable(table)  # the dead worker's commit
        assert await sink.batch_counts(table, batch) == {"s3://b/k": 2}
    finally:
        sink.close()


async def test_the_server_requires_its_token(spark4: Spark4Server) -> None:
    """ICEFEED_SPARK_URL's token= reaches Spark 4's authenticator (every test here uses it)."""
    from pydantic import SecretStr

    from worker.adapters.spark_sink import SparkSink
    from worker.domain.errors import IcefeedError
    from worker.settings import SparkSettings

    for url in (spark4.url.replace(spark4.token, "wrong"), spark4.url.split("/;")[0]):
        sink = SparkSink(SparkSettings(url=SecretStr(url), dialect="spark", client_retries=0))
        try:
            with pytest.raises(IcefeedError, match="UNAUTHENTICATED"):
                await sink.ping()
        finally:
            sink.close()
