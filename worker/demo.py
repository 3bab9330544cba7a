"""``icefeed demo``: the whole product on the local stack, end to end, in well under a minute.

Starts moto (S3, SQS, Glue) + Sail (Spark Connect) + PostgreSQL, provisions the routes in
``worker/samples/routes.toml``, runs ONE worker, uploads the sample files, waits until the ledger
has settled every file, then shows the ledger, the Iceberg tables (read back independently with
pyiceberg) and the timings. Everything it starts is stopped again, also on Ctrl-C or an error.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from worker.adapters.pg_ledger import migrate
from worker.adapters.pg_operator import drop_ledger_schema, fetch_once
from worker.domain.batching import source_uri
from worker.domain.outcomes import TERMINAL
from worker.localstack import Stack, iceberg_catalog
from worker.routes import Routes, load_routes
from worker.settings import REPO_ROOT, PgSettings

SAMPLES = Path(__file__).resolve().parent / "samples"
FINAL = TERMINAL
DEADLINE_S = 120.0
LINEAGE = {
    "_source_file": "lineage: the S3 object the row came from",
    "_batch_id": "lineage: the ledger batch, one Iceberg commit",
    "_ingested_at": "lineage: when that batch was written",
}


def _say(text: str = "") -> None:
    print("\n".join(line.rstrip() for line in text.split("\n")), flush=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _handle_signals(handler: Any) -> dict[int, Any]:
    """Install ``handler`` for SIGINT and SIGTERM (main thread only); return the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def sample_objects() -> list[tuple[str, bytes]]:
    """(key, body): files under landing/ as they are; files under gzip/ compressed, key + '.gz'."""
    objects = []
    for kind in ("landing", "gzip"):
        root = SAMPLES / kind
        for path in (p for p in root.rglob("*") if p.is_file()):
            key, body = path.relative_to(root).as_posix(), path.read_bytes()
            objects.append((key + ".gz", gzip.compress(body, mtime=0)) if kind == "gzip" else (key, body))
    return sorted(objects)


def _pg(dsn: str, schema: str) -> PgSettings:
    return PgSettings(dsn=SecretStr(dsn), ledger_schema=schema)


def _sql(dsn: str, schema: str, block: str) -> list[dict[str, Any]]:
    """The rows of one named block of operator.sql, on the demo's ledger schema."""
    return [dict(r) for r in asyncio.run(fetch_once(_pg(dsn, schema), block, application_name="icefeed-demo"))]


def _cell(value: Any, column: str = "", width: int = 24) -> str:
    if column == "_batch_id":
        return str(value)[:8]
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    else:
        text = "" if value is None else str(value)
    if column == "_source_file":  # the end of a path says the most
        return text if len(text) <= 30 else "…" + text[-29:]
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> None:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        just = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        _say("    " + "  ".join(just))


def _schema_lines(fields: Any, depth: int = 0) -> Iterator[str]:
    """One line per field; the fields of a struct (or of a list's struct) indented under it."""
    for f in fields:
        inner = getattr(f.field_type, "element_type", f.field_type)
        nested = getattr(inner, "fields", None)
        kind = ("list<struct>" if inner is not f.field_type else "struct") if nested else str(f.field_type)
        note = LINEAGE.get(f.name, "required" if f.required else "")
        yield f"    {f.field_id:>3}  {'  ' * depth}{f.name:<{16 - 2 * depth}} {kind:<13} {note}"
        if nested:
            yield from _schema_lines(nested, depth + 1)


def _show_table(catalog: Any, name: str) -> Counter[str]:
    """Print one Iceberg table as pyiceberg sees it; return its rows per ``_source_file``."""
    tbl = catalog.load_table(name.split(".", 1)[1])
    rows = tbl.scan().to_arrow().to_pylist()
    snaps = len(tbl.snapshots())
    _say(f"\n  {name}: {len(rows)} rows, {snaps} snapshot{'s' * (snaps != 1)}, at {tbl.location()}")
    _say("  schema (field id, name, type):\n" + "\n".join(_schema_lines(tbl.schema().fields)))
    columns = [f.name for f in tbl.schema().fields if f.name not in LINEAGE] + list(LINEAGE)
    first = sorted(rows, key=lambda r: (r[columns[0]] is None, r[columns[0]] or ""))[:5]
    numbers = frozenset(i for i, c in enumerate(columns) if first and isinstance(first[0][c], int | float))
    _say(f"  first {len(first)} rows by {columns[0]}:")
    _table(columns, [[_cell(r[c], c) for c in columns] for r in first], numbers)
    return Counter(r["_source_file"] for r in rows)


def _start_worker(env: dict[str, str], log_path: Path, timeout: float = 60) -> subprocess.Popen[bytes]:
    """Start ``python -m worker run``; return once it logs ``worker_started``."""
    argv = [sys.executable, "-m", "worker", "run"]
    with open(log_path, "wb") as log:  # its own session: Ctrl-C reaches the demo, which stops it
        worker = subprocess.Popen(  # noqa: S603 - a fixed argv
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while '"worker_started"' not in log_path.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            _stop_worker(worker)
            raise RuntimeError(f"the worker did not start (exit status {worker.returncode}); see {log_path}")
        time.sleep(0.1)
    return worker


def _stop_worker(worker: subprocess.Popen[bytes] | None, grace: float = 40) -> int | None:
    if worker is not None and worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return None if worker is None else worker.returncode


def _wait_for_ledger(dsn: str, schema: str, keys: list[str], since: float, worker: subprocess.Popen[bytes]) -> bool:
    """Poll the ledger until every uploaded key has a final status; print progress as it changes."""
    last = ""
    while True:
        statuses = {r["key"]: r["status"] for r in _sql(dsn, schema, "demo_file_statuses")}
        mine = {k: statuses[k] for k in keys if k in statuses}
        counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(mine.values()).items()))
        line = f"{len(mine)}/{len(keys)} files in the ledger" + (f": {counts}" if counts else "")
        if line != last:
            _say(f"      {time.monotonic() - since:5.1f} s  {line}")
            last = line
        if len(mine) == len(keys) and set(mine.values()) <= FINAL:
            return True
        if worker.poll() is not None or time.monotonic() - since > DEADLINE_S:
            _say("      the worker exited" if worker.poll() is not None else f"      gave up after {DEADLINE_S:.0f} s")
            return False
        time.sleep(0.2)


def _show_ledger(files: dict[str, dict[str, Any]], keys: list[str], uploaded_at: datetime) -> None:
    _say("\n  The ledger: one row per file, claimed once and loaded in one batch (one Iceberg commit)")
    rows = []
    for key in keys:
        f = files.get(key, {})
        after = f"{(f['finished_at'] - uploaded_at).total_seconds():.1f} s" if f.get("status") == "LOADED" else ""
        batch = str(f.get("batch_id") or "")[:8]
        rows.append([key, f.get("ingestion", ""), f.get("status", "(none)"), _cell(f.get("rows_loaded")), batch, after])
    _table(["key", "route", "status", "rows", "batch", "queryable after"], rows, frozenset({3, 5}))
    for key, f in files.items():
        if f["status"] != "LOADED":
            _say(f"    {key}: {f['status']} {f['error_class'] or ''} {f['error_message'] or ''}")


def _tail(path: Path, lines: int = 25) -> None:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    _say(f"\nLast {min(lines, len(text))} lines of {path}:")
    for line in text[-lines:]:
        _say("  " + line)


def _say_stack(stack: Stack, routes: Routes, routes_file: Path, schema: str, took: float) -> None:
    """Step 1's report: how long the stack took, its endpoints (no password) and the routes."""
    _say(f"      ready in {took:.1f} s: buckets, queue + DLQ, S3 notifications, Glue database")
    _say(f"      moto        {stack.moto_url}    Sail {stack.spark_url}")
    dsn = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", stack.pg_dsn)
    _say(f"      PostgreSQL  {'embedded ' * stack.pg_embedded}{dsn}, ledger schema {schema}")
    _say(f"      routes      {routes_file.relative_to(REPO_ROOT)}:")
    for ing in routes.ingestion:
        _say(f"        {f's3://{ing.bucket}/{ing.prefix}*{ing.suffix}':<40} {ing.format:<5} → {ing.table}")


def _worker_env(stack: Stack, queue_url: str, routes_file: Path, schema: str) -> dict[str, str]:
    """The demo worker's environment: ours without any ICEFEED_ setting, then the stack's and the demo's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICEFEED_")}
    env |= stack.worker_env(queue_url, routes_file, schema) | {
        "ICEFEED_LOG_FORMAT": "json",
        "ICEFEED_BATCH_MAX_WAIT_S": "0.5",
        "ICEFEED_SQS_WAIT_TIME_S": "1",
        "ICEFEED_WORKER_ID": "demo-worker",
        "ICEFEED_HTTP_PORT": "0",
    }
    return env


def _show_tables(stack: Stack, routes: Routes) -> Counter[str]:
    """Show every routed table read back with pyiceberg; return its rows counted per source file."""
    catalog, in_tables = iceberg_catalog(stack.moto_url), Counter[str]()
    for name in dict.fromkeys(i.table for i in routes.ingestion):
        try:
            in_tables += _show_table(catalog, name)
        except Exception as exc:  # noqa: BLE001 - reported; the verdict below fails
            _say(f"\n  {name}: cannot read it with pyiceberg ({type(exc).__name__}: {exc})")
    return in_tables


def _verdict(
    files: dict[str, dict[str, Any]],
    keys: list[str],
    bucket: str,
    settled: bool,
    in_tables: Counter[str],
    code: int | None,
    log_path: Path,
) -> int:
    """Compare the ledger, the tables and the worker's exit; print OK or FAILED (with the log tail)."""
    loaded = {k: f["rows_loaded"] or 0 for k, f in files.items() if f["status"] == "LOADED"}
    expected = Counter({source_uri(bucket, k): n for k, n in loaded.items() if n})
    problems = []
    if not settled or set(loaded) != set(keys):
        problems.append(f"{len(loaded)} of {len(keys)} sample files are LOADED")
    if in_tables != expected:
        problems.append(f"the tables' rows per file ({in_tables.total()} in all) differ from the ledger's")
    if code != 0:
        problems.append(f"the worker exited with status {code}")
    if problems:
        _say("FAILED: " + "; ".join(problems))
        _tail(log_path)
        return 1
    _say(f"OK: all {len(keys)} files LOADED; the tables hold exactly the {expected.total()} rows the ledger counted")
    return 0


def run_demo(workdir: Path) -> int:
    wall = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    routes_file, log_path = SAMPLES / "routes.toml", workdir / "worker.log"
    routes = load_routes(routes_file)
    bucket = routes.ingestion[0].bucket
    schema = f"demo_{uuid.uuid4().hex[:8]}"  # a fresh ledger per run, dropped at the end
    stack = Stack(workdir / "stack")
    worker: subprocess.Popen[bytes] | None = None
    ledger_created = False
    previous = _handle_signals(_interrupt)  # SIGTERM too: clean up, never leave processes behind
    _say("icefeed demo: S3 files → SQS → PostgreSQL ledger → Spark Connect → Iceberg, exactly once\n")
    try:
        _say("[1/5] Starting the local stack: moto (S3, SQS, Glue), Sail (Spark Connect), PostgreSQL …")
        t = time.monotonic()
        stack.start()
        prov = stack.provision(routes, queue_name="icefeed-demo-events")
        ledger_created = True
        asyncio.run(migrate(_pg(stack.pg_dsn, schema), REPO_ROOT / "migrations"))
        _say_stack(stack, routes, routes_file, schema, time.monotonic() - t)

        _say(f"\n[2/5] Starting one worker, logs in {log_path} …")
        t = time.monotonic()
        worker = _start_worker(_worker_env(stack, prov.queue_url, routes_file, schema), log_path)
        _say(f"      polling the queue after {time.monotonic() - t:.1f} s")

        objects = sample_objects()
        _say(f"\n[3/5] Uploading {len(objects)} sample files from {SAMPLES.relative_to(REPO_ROOT)} to s3://{bucket}/")
        s3 = stack.client("s3")
        uploaded_at, since = datetime.now(UTC), time.monotonic()
        for key, body in objects:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            _say(f"      {key:<40} {len(body):>5} bytes")

        _say("\n[4/5] Waiting for the worker to load them (polling the ledger; time since the first upload) …")
        keys = [key for key, _ in objects]
        settled = _wait_for_ledger(stack.pg_dsn, schema, keys, since, worker)

        _say("\n[5/5] Results")
        files = {r["key"]: r for r in _sql(stack.pg_dsn, schema, "demo_files")}
        _show_ledger(files, keys, uploaded_at)
        in_tables = _show_tables(stack, routes)
        finished = [f["finished_at"] for f in files.values() if f["status"] == "LOADED"]
        if finished:
            took = (max(finished) - uploaded_at).total_seconds()
            _say(f"\n  Upload → queryable: {took:.1f} s (first upload → last Iceberg commit)")
        code = _stop_worker(worker)
        _say(f"  Worker stopped with SIGTERM: exit status {code}")
        _say(f"  Demo wall time:     {time.monotonic() - wall:.1f} s\n")
        return _verdict(files, keys, bucket, settled, in_tables, code, log_path)
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping everything …")
        return 130
    except Exception as exc:  # noqa: BLE001 - a newcomer gets a message, the traceback and the log tail
        _say(f"\nFAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        if worker is not None:
            _tail(log_path)
        else:
            _say(f"The stack's logs: {stack.workdir}/*.log")
        return 1
    finally:
        _handle_signals(signal.SIG_IGN)  # the clean-up must finish, even on a second Ctrl-C
        try:
            _stop_worker(worker)
            if ledger_created:
                asyncio.run(drop_ledger_schema(_pg(stack.pg_dsn, schema), application_name="icefeed-demo"))
        except Exception as exc:  # noqa: BLE001 - the stack must still be stopped
            _say(f"note: clean-up failed: {type(exc).__name__}: {exc}")
        finally:
            stack.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
