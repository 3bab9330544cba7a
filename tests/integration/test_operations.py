"""Operations on the real local stack: /metrics agrees with the ledger and the table, /healthz and
/readyz follow the worker's dependencies (cut through TCP proxies, never by stopping the shared
servers), ``icefeed check``, a fleet of three whose counters add up, and secrets kept out of
every output."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest

from tests.harness import Env, poll, s3_event
from tests.integration.ops_support import Samples, TcpProxy, get, get_json, scrape, value
from worker.localstack import free_port

pytestmark = pytest.mark.integration

OUTCOMES = ("loaded", "failed", "quarantined", "gone", "skipped")


def jsonl(*rows: dict) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def start(env: Env, name: str = "w", **extra: str) -> int:
    """A worker with its operations endpoint on a free port; returns the port once it answers."""
    port = free_port()
    proc = env.start_worker(name, ICEFEED_HTTP_PORT=str(port), ICEFEED_HTTP_HOST="127.0.0.1", **extra)
    poll(lambda: proc.poll() is not None or get(port, "/healthz")[0] == 200, 90, f"{name} answering /healthz")
    assert proc.poll() is None, env.worker_logs()[-3000:]
    return port


def ledger_outcomes(env: Env) -> dict[str, int]:
    statuses = Counter(f["status"] for f in env.files())
    return {o: statuses.get(o.upper(), 0) for o in OUTCOMES}


def metric_outcomes(samples: Samples) -> dict[str, int]:
    return {o: int(value(samples, "icefeed_files_total", outcome=o)) for o in OUTCOMES}


def log_events(env: Env) -> Counter[str]:
    events: Counter[str] = Counter()
    for line in env.worker_logs().splitlines():
        with contextlib.suppress(ValueError):
            events[json.loads(line).get("event", "")] += 1
    return events


# -- metrics against the ledger -----------------------------------------------------------------------


def test_metrics_agree_with_the_ledger_and_the_table(env: Env) -> None:
    env.migrate()
    port = start(env, ICEFEED_HTTP_STATS_INTERVAL_S="0.5")
    env.put("events/a.json", jsonl({"id": 1, "price": 1.5}, {"id": 2, "price": 2.5}))
    env.wait_files(1)  # the table exists, price is a double
    for i in range(5):
        env.put(f"events/ok-{i}.json", jsonl(*({"id": 10 * i + j, "price": 1.0} for j in range(i + 1))))
    env.put("events/broken.json", b'{"id": 1}\n{"id": \n')
    env.put("events/conflict.json", jsonl({"id": 99, "price": {"amount": 2.5, "currency": "EUR"}}))
    env.send_raw("this is not json")
    env.send_raw(s3_event(env.bucket, "events/never-uploaded.json", "0123456789abcdef0123456789abcdef", 10))
    files = env.wait_files(9)
    assert Counter(f["status"] for f in files) == {"LOADED": 6, "FAILED": 1, "QUARANTINED": 1, "GONE": 1}, files
    poll(lambda: env.queue_depth() == 0, 60, "queue drained")

    def settled() -> Samples | None:
        m = scrape(port)
        if metric_outcomes(m) != ledger_outcomes(env) or value(m, "icefeed_quarantined_files") != 1:
            return None
        if value(m, "icefeed_inflight_files") != 0 or value(m, "icefeed_messages_acked_total") < 11:
            return None
        return m

    m = poll(settled, 60, "metrics matching the ledger")
    loaded = [f for f in env.files() if f["status"] == "LOADED"]
    rows = sum(f["rows_loaded"] for f in loaded)
    assert rows == 2 + sum(range(1, 6)) == len(env.table_rows("events"))
    assert value(m, "icefeed_rows_loaded_total") == rows
    assert value(m, "icefeed_bytes_loaded_total") == sum(f["size_bytes"] for f in loaded)
    assert value(m, "icefeed_upload_to_loaded_seconds_count", engine="default") == len(loaded)

    batches = env.sql("SELECT status, files FROM batches")
    assert value(m, "icefeed_batch_files_count", engine="default") == len(batches)
    assert value(m, "icefeed_batch_files_sum", engine="default") == sum(b["files"] for b in batches)
    committed = [b for b in batches if b["status"] == "COMMITTED"]
    assert value(m, "icefeed_commit_duration_seconds_count", engine="default") == len(committed) > 0
    for stage in ("receive", "claim", "infer+write", "finalize"):
        assert value(m, "icefeed_stage_duration_seconds_count", stage=stage) >= 1, stage

    # Messages: 8 uploads, 2 raw messages and the s3:TestEvent, each acked; every receive ended in
    # exactly one ack or one requeue (one worker, nothing left in flight).
    received, acked = value(m, "icefeed_messages_received_total"), value(m, "icefeed_messages_acked_total")
    assert acked >= 11
    assert received == acked + value(m, "icefeed_messages_requeued_total")
    assert value(m, "icefeed_messages_rejected_total") == len(env.sql("SELECT id FROM rejected_messages")) == 1
    events = log_events(env)
    assert value(m, "icefeed_files_total", outcome="ignored") == events["record_ignored"] + events["file_unrouted"] >= 1
    assert value(m, "icefeed_messages_dead_lettered_total") == 0
    assert value(m, "icefeed_spark_reconnects_total") == 0

    queue = env.prov.queue_url.rsplit("/", 1)[1]
    dlq = f"{queue}-dlq"  # found through the queue's RedrivePolicy

    def refreshed() -> Samples | None:
        s = scrape(port)
        if ("icefeed_queue_messages", (("kind", "visible"), ("queue", dlq))) not in s:
            return None
        drained = value(s, "icefeed_queue_messages", queue=queue, kind="visible") == 0
        return s if drained and value(s, "icefeed_queue_messages", queue=queue, kind="inflight") == 0 else None

    m = poll(refreshed, 30, "queue gauges refreshed")
    for kind in ("visible", "inflight", "delayed"):
        assert ("icefeed_queue_messages", (("kind", kind), ("queue", queue))) in m, kind
        assert ("icefeed_queue_messages", (("kind", kind), ("queue", dlq))) in m, kind
    age = ("icefeed_queue_oldest_message_age_seconds", (("queue", queue),))
    assert age in m and 0 <= m[age] < 600

    status, health = get_json(port, "/healthz")
    assert status == 200 and health["status"] == "ok", health
    assert {"receivers", "heartbeat", "event_loop"} <= set(health["checks"])
    status, ready = get_json(port, "/readyz")
    assert status == 200, ready
    assert {name for name, c in ready["checks"].items() if c["ok"]} == {"postgres", "spark", "sqs"}
    assert env.stop_workers() == [0]


# -- readiness follows the dependencies -----------------------------------------------------------------


def test_readyz_fails_while_postgres_or_spark_is_cut_off_and_recovers(env: Env) -> None:
    env.migrate()
    pg = urlsplit(env.stack.pg_dsn)
    sail_port = int(env.stack.spark_url.rsplit(":", 1)[1])
    assert pg.hostname and pg.port, f"the local stack's PostgreSQL listens on TCP, embedded or not: {env.stack.pg_dsn}"
    with TcpProxy(pg.hostname, pg.port) as pg_proxy, TcpProxy("127.0.0.1", sail_port) as spark_proxy:
        dsn = pg._replace(netloc=pg.netloc.replace(f"{pg.hostname}:{pg.port}", f"127.0.0.1:{pg_proxy.port}")).geturl()
        assert str(pg_proxy.port) in dsn, dsn
        port = start(
            env,
            ICEFEED_PG_DSN=dsn,
            ICEFEED_SPARK_URL=f"sc://127.0.0.1:{spark_proxy.port}",
            ICEFEED_HTTP_READY_CACHE_S="0.5",
            ICEFEED_HTTP_PROBE_TIMEOUT_S="1",
        )
        poll(lambda: get(port, "/readyz")[0] == 200, 90, "ready through both proxies")
        assert pg_proxy.connections > 0 and spark_proxy.connections > 0

        def unready_on(name: str) -> dict | None:
            status, body = get_json(port, "/readyz")
            return body if status == 503 and not body["checks"][name]["ok"] else None

        pg_proxy.close()
        body = poll(lambda: unready_on("postgres"), 60, "/readyz 503 without PostgreSQL")
        assert body["checks"]["spark"]["ok"] and body["checks"]["sqs"]["ok"], body
        assert "ICEFEED_PG_DSN" in body["checks"]["postgres"]["hint"]
        assert get(port, "/healthz")[0] == 200  # a dependency outage is not a reason to restart
        pg_proxy.open()
        poll(lambda: get(port, "/readyz")[0] == 200, 60, "ready again with PostgreSQL back")

        spark_proxy.close()
        poll(lambda: unready_on("spark"), 60, "/readyz 503 without Spark Connect")
        # Wait for the ping itself to fail (not just time out): the session is then dropped.
        body = poll(
            lambda: (b := unready_on("spark")) and b["checks"]["spark"]["detail"].startswith("SparkUnavailable") and b,
            90,
            "the Spark ping to fail",
        )
        assert body["checks"]["postgres"]["ok"], body
        assert get(port, "/healthz")[0] == 200
        spark_proxy.open()
        poll(lambda: get(port, "/readyz")[0] == 200, 90, "ready again with Spark Connect back")
        assert value(scrape(port), "icefeed_spark_reconnects_total") >= 1

        env.put("events/after.json", jsonl({"id": 1}))  # and it still loads
        (row,) = env.wait_files(1)
        assert row["status"] == "LOADED", row
        assert env.stop_workers() == [0]


# -- icefeed check --------------------------------------------------------------------------------------


def test_icefeed_check_passes_on_the_stack_and_explains_what_fails(env: Env) -> None:
    env.migrate()
    ok = env.cli("check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["PASS", "routes"],
        ["PASS", "postgres"],
        ["PASS", "ledger"],
        ["PASS", "spark"],
        ["PASS", "catalog"],
        ["PASS", "sqs"],
        ["PASS", "notifications"],
        ["PASS", "bad-records"],
    ], ok.stdout
    assert "with a DLQ" in lines[-3] and "database reachable" in lines[-4]
    doc = json.loads(env.cli("check", "--json").stdout)
    assert doc["ok"] is True and len(doc["checks"]) == 8

    bad = env.cli("check", ICEFEED_PG_DSN=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failed = {line.split()[1]: line for line in bad.stdout.splitlines() if line.startswith("FAIL")}
    assert set(failed) == {"postgres", "ledger"}, bad.stdout
    assert "PgUnavailable" in failed["postgres"] and "fix: check ICEFEED_PG_DSN" in failed["postgres"]
    assert "icefeed check: 2 of 8 checks failed: postgres, ledger" in bad.stderr
    bad_json = env.cli("check", "--json", ICEFEED_PG_DSN=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert bad_json.returncode == 1
    assert not json.loads(bad_json.stdout)["ok"]

    fresh = env.cli("check", ICEFEED_PG_LEDGER_SCHEMA=f"unmigrated_{env.tag}")
    assert fresh.returncode == 1
    failed = {line.split()[1]: line for line in fresh.stdout.splitlines() if line.startswith("FAIL")}
    assert set(failed) == {"ledger"}, fresh.stdout
    assert "not migrated" in failed["ledger"] and "icefeed migrate" in failed["ledger"]

    # A route whose bucket does not notify the queue, and one whose database does not exist.
    extra = env.routes_file.read_text() + (
        f'\n[[ingestion]]\nname = "orphan"\nbucket = "{env.bucket}"\nprefix = "orphan/"\nformat = "json"\n'
        f'table = "glue.no_such_db.t"\nlocation = "s3://{env.warehouse}/orphan"\n'
        # ... and one that keeps bad records in a bucket that does not exist
        'bad_records = "quarantine"\nbad_records_location = "s3://icefeed-no-such-bucket/bad"\n'
    )
    routes = env.tmp / "routes-orphan.toml"
    routes.write_text(extra)
    orphan = env.cli("check", ICEFEED_ROUTES_FILE=str(routes))
    assert orphan.returncode == 1
    failed = {line.split()[1]: line for line in orphan.stdout.splitlines() if line.startswith("FAIL")}
    assert set(failed) == {"catalog", "notifications", "bad-records"}, orphan.stdout
    assert "orphan (s3://" in failed["notifications"] and "fix: add an s3:ObjectCreated:*" in failed["notifications"]
    assert "NoSuchBucket" in failed["bad-records"] and "Terraform: bad_records_locations" in failed["bad-records"]


# -- secrets ---------------------------------------------------------------------------------------------


def canaries() -> dict[str, str]:
    """A distinct, unguessable value for every setting that can hold a secret."""
    names = (
        "spark_token",
        "spark_header",
        "pg_password",
        "pg_sslpassword",
        "catalog_secret_key",
        "catalog_token",
        "catalog_header",
        "catalog_uri_password",
        "aws_secret_access_key",
        "aws_session_token",
        "spark_env_token",
        "pgpassword",
    )
    return {name: f"canary-{name}-{uuid.uuid4().hex}" for name in names}


def ledger_text(env: Env) -> str:
    """Every row of every ledger table, as text."""
    tables = env.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", env.schema)
    assert {"files", "batches", "rejected_messages", "schema_proposals"} <= {t["table_name"] for t in tables}
    out = []
    for t in tables:
        (query,) = env.sql(
            "SELECT format('SELECT t::text AS row FROM %I.%I t', $1::text, $2::text) AS q", env.schema, t["table_name"]
        )
        out += [r["row"] for r in env.sql(query["q"])]
    return "\n".join(out)


def test_secrets_stay_out_of_logs_metrics_probes_cli_and_the_ledger(env: Env) -> None:
    c = canaries()
    dsn, n = re.subn(r"^(postgres(?:ql)?://[^:@/]+)@", rf"\g<1>:{c['pg_password']}@", env.stack.pg_dsn)
    assert n == 1, f"cannot add a password to {env.stack.pg_dsn}"
    dsn += ("&" if "?" in dsn else "?") + f"sslpassword={c['pg_sslpassword']}"
    sail_port = env.stack.spark_url.rsplit(":", 1)[1]
    # Sail accepts (and ignores) a bearer token and unknown headers; grpc sends a token over
    # plain TCP only to "localhost".
    url = f"sc://localhost:{sail_port}/;token={c['spark_token']};user_id=etl;x-gateway-key={c['spark_header']}"
    # The same URL with a malformed header parameter: the Spark Connect client's error quotes it.
    echo_url = url + "=x"
    catalog = {
        "type": "glue",
        "glue.region": "us-east-1",
        "s3.secret-access-key": c["catalog_secret_key"],
        "token": c["catalog_token"],
        "header.X-Api-Key": c["catalog_header"],
    }
    secrets = {
        "ICEFEED_PG_DSN": dsn,
        "ICEFEED_ICEBERG_CATALOG": json.dumps(catalog),
        "AWS_SECRET_ACCESS_KEY": c["aws_secret_access_key"],  # moto accepts any credentials
        "AWS_SESSION_TOKEN": c["aws_session_token"],
        "SPARK_CONNECT_AUTHENTICATE_TOKEN": c["spark_env_token"],  # the URL's token wins
        "PGPASSWORD": c["pgpassword"],  # the DSN's password wins (and trust auth ignores both)
    }
    env.migrate()

    # 1. A worker whose Spark URL the client rejects, quoting the secret: the batch fails and the
    # error is logged (the batch stays open: the probe cannot reach Spark either).
    echo_port = start(env, "echo", ICEFEED_SPARK_URL=echo_url, **secrets)
    env.put("events/a.json", jsonl({"id": 1, "price": 1.5}))
    poll(lambda: "x-gateway-key=***" in env.worker_logs(), 90, "the Spark client's error, masked, in the log")
    status, unready = get(echo_port, "/readyz")  # its Spark probe fails with the same error
    assert status == 503 and "x-gateway-key=***" in unready, unready
    assert env.stop_workers() == [0]
    # A message that is no event, carrying a secret (a producer's connection string): rejected,
    # and kept in the ledger for the operator.
    env.send_raw(f"connection failed: {dsn} (token {c['spark_token']})")

    # 2. A worker that works, with every secret set, and an operations endpoint.
    port = start(env, ICEFEED_SPARK_URL=url, **secrets)
    env.wait_files(1, timeout=120)  # a.json, once its open batch is recovered: the table exists
    env.put("events/conflict.json", jsonl({"id": 2, "price": {"amount": 2.5}}))
    files = {f["key"]: f for f in env.wait_files(2, timeout=120)}
    (rejected,) = poll(lambda: env.sql("SELECT body FROM rejected_messages"), 60, "the rejected message")
    assert rejected["body"].startswith("connection failed: ") and "***" in rejected["body"], rejected
    assert files["events/a.json"]["status"] == "LOADED", files  # the secret URL and DSN were used
    assert files["events/conflict.json"]["status"] == "QUARANTINED", files
    outputs = {
        "/readyz of the failing worker": unready,
        "/metrics": get(port, "/metrics")[1],
        "/readyz": poll(lambda: (r := get(port, "/readyz"))[0] == 200 and r[1], 60, "ready"),
        "/healthz": get(port, "/healthz")[1],
    }

    # 3. CLI paths that print what servers and libraries said.
    bad_pg = (
        f"postgresql://postgres:{c['pg_password']}@127.0.0.1:{free_port()}/postgres?sslpassword=x{c['pg_sslpassword']}"
    )
    check = env.cli("check", **{**secrets, "ICEFEED_SPARK_URL": echo_url, "ICEFEED_PG_DSN": bad_pg})
    assert check.returncode == 1 and "FAIL  spark" in check.stdout and "FAIL  postgres" in check.stdout
    assert "x-gateway-key=***" in check.stdout, check.stdout  # the probe saw the echo, masked
    history = env.cli("file", f"s3://{env.bucket}/events/a.json", **secrets, ICEFEED_SPARK_URL=url)
    assert history.returncode == 0 and "LOADED" in history.stdout, history.stdout + history.stderr
    listed = env.cli("files", "--json", **secrets, ICEFEED_SPARK_URL=url)
    assert listed.returncode == 0, listed.stderr
    # pyiceberg's error about a catalog URI it cannot use quotes the URI, password included.
    (proposal,) = env.sql("SELECT id FROM schema_proposals")
    uri_catalog = {k: v for k, v in catalog.items() if k != "type"}
    uri_catalog["uri"] = f"nocatalog://icefeed:{c['catalog_uri_password']}@catalog.invalid/"
    approve = env.cli(
        "schema",
        "approve",
        str(proposal["id"]),
        "--as",
        "string",
        **{**secrets, "ICEFEED_ICEBERG_CATALOG": json.dumps(uri_catalog)},
        ICEFEED_SPARK_URL=url,
    )
    assert approve.returncode == 1 and "nocatalog://" in approve.stderr, approve.stderr
    assert env.stop_workers() == [0]
    outputs |= {
        "check": check.stdout + check.stderr,
        "file": history.stdout + history.stderr,
        "files --json": listed.stdout + listed.stderr,
        "schema approve": approve.stdout + approve.stderr,
        "worker logs": env.worker_logs(),
        "ledger": ledger_text(env),
    }
    assert "batch_committed" in outputs["worker logs"]
    leaks = [(where, name) for where, text in outputs.items() for name, canary in c.items() if canary in text]
    assert not leaks, leaks


# -- a fleet -----------------------------------------------------------------------------------------


def test_a_fleet_of_three_loads_every_file_once_and_its_counters_add_up(env: Env) -> None:
    env.migrate()
    ports = [start(env, f"f{i}") for i in range(3)]
    expected: Counter[tuple[int, int]] = Counter()
    for i in range(150):
        env.put(f"events/fleet/{i:03}.json", jsonl(*({"id": i, "n": j} for j in range(i % 4 + 1))))
        expected.update((i, j) for j in range(i % 4 + 1))
    files = env.wait_files(150, timeout=420)
    assert Counter(f["status"] for f in files) == {"LOADED": 150}
    poll(lambda: env.queue_depth() == 0, 120, "queue drained")

    # No double load: the ledger's counts are exactly the table's (read with pyiceberg).
    rows = env.table_rows("events")
    assert Counter((r["id"], r["n"]) for r in rows) == expected
    per_file = Counter(r["_source_file"] for r in rows)
    assert per_file == {f"s3://{env.bucket}/{f['key']}": f["rows_loaded"] for f in files}
    batch_of: dict[str, set[str]] = {}
    for r in rows:
        batch_of.setdefault(r["_source_file"], set()).add(r["_batch_id"])
    assert all(len(b) == 1 for b in batch_of.values()), "a file's rows come from one batch"
    committed = {str(b["id"]) for b in env.sql("SELECT id FROM batches WHERE status = 'COMMITTED'")}
    assert {b for bs in batch_of.values() for b in bs} <= committed

    total_rows = sum(f["rows_loaded"] for f in files)
    total_bytes = sum(f["size_bytes"] for f in files)

    def summed() -> list[Samples] | None:
        scrapes = [scrape(p) for p in ports]
        loaded = sum(value(s, "icefeed_files_total", outcome="loaded") for s in scrapes)
        rows_ = sum(value(s, "icefeed_rows_loaded_total") for s in scrapes)
        return scrapes if (loaded, rows_) == (150, total_rows) else None

    scrapes = poll(summed, 60, "the fleet's counters to add up to the ledger")
    assert sum(value(s, "icefeed_bytes_loaded_total") for s in scrapes) == total_bytes
    assert sum(value(s, "icefeed_upload_to_loaded_seconds_count", engine="default") for s in scrapes) == 150
    for outcome in ("failed", "quarantined", "gone", "skipped"):
        assert sum(value(s, "icefeed_files_total", outcome=outcome) for s in scrapes) == 0, outcome
    assert sum(value(s, "icefeed_messages_acked_total") for s in scrapes) >= 151  # + the s3:TestEvent
    assert sum(value(s, "icefeed_batch_files_sum", engine="default") for s in scrapes) >= 150
    busy = [s for s in scrapes if value(s, "icefeed_messages_received_total") > 0]
    assert len(busy) >= 2, "the queue's messages were shared by the fleet"
    assert env.stop_workers() == [0, 0, 0]
