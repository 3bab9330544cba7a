"""Machinery of the chaos suite: expected data, settling, exact checks, fault helpers, report.

Every scenario uploads files whose rows carry ids unique across the scenario, so the final Iceberg
table (read with pyiceberg, not with the engine that wrote it) can be compared with the EXACT
expected multiset of rows: a lost file shows as missing ids, a replayed batch as ids seen twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg

from tests.harness import Env, poll
from worker.domain.events import s3_notification_record

#: Every random choice of the suite derives from this seed (override: ICEFEED_CHAOS_SEED=…).
SEED = int(os.environ.get("ICEFEED_CHAOS_SEED", "20261122"))

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT_PATH = REPO_ROOT / "build" / "chaos-report.json"
REPORT_KEYS = ("scenario", "files", "loaded", "quarantined", "failed", "lost", "duplicated_rows")
HEADERS = ("fault scenario", "files", "loaded", "quarantined", "failed", "lost", "duplicated rows")

#: Rows of the report, collected over the session and written by tests/chaos/conftest.py.
REPORT: list[dict[str, Any]] = []
#: Free-form lines printed under the table (recovery paths seen, kills done …).
NOTES: list[str] = []

OPEN = frozenset({"PENDING", "CLAIMED"})

#: Retry backoff of every chaos worker (the harness's is 1–2 s). A redelivered message whose file
#: is CLAIMED by a batch still in flight (a slow write on a loaded machine, or a dead worker's
#: batch waiting for its sweeper) is requeued with this backoff, and each receive counts towards
#: maxReceiveCount (4): 1–2 s leave ~5 s before the DLQ, less than a batch takes on a busy 2-core
#: machine (seen: duplicates of files being loaded dead-lettered although the files loaded).
#: 2–8 s leave ~22 s, in the proportions of production (10–900 s, maxReceiveCount 5). The short
#: budget itself is pinned down by test_pg_backends_of_a_lock_waiting_worker_terminated.
CHAOS_WORKER = {"ICEFEED_SQS_BACKOFF_BASE_S": "2", "ICEFEED_SQS_BACKOFF_MAX_S": "8"}
BACKOFF_MAX_S = 8

#: A worker about to be killed: its short lease (5 s) lets the survivors' sweepers (orphan grace
#: 2 s, then a Spark probe) settle its batch about when its messages come back (visibility 10 s);
#: redeliveries that still find the files CLAIMED wait within the 2–8 s backoff budget above.
DOOMED = {"ICEFEED_LEASE_TTL_S": "5", "ICEFEED_SQS_VISIBILITY_TIMEOUT_S": "10"}


def start(env: Env, name: str, **extra: str) -> subprocess.Popen[bytes]:
    """``Env.start_worker`` with the chaos suite's retry backoff (overridable per worker)."""
    return env.start_worker(name, **{**CHAOS_WORKER, **extra})


# -- expected data -------------------------------------------------------------------------------


@dataclass
class Version:
    """One uploaded object version (a file identity: bucket, key, etag) and the ids it holds."""

    key: str
    etag: str
    ids: list[int]
    size: int
    sequencer: str


@dataclass
class Expected:
    bucket: str
    current: dict[str, Version] = field(default_factory=dict)
    superseded: list[Version] = field(default_factory=list)
    next_id: int = 1
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def upload(self, env: Env, key: str, nrows: int) -> Version:
        """PUT a JSON-lines object of ``nrows`` rows with fresh ids (overwriting supersedes)."""
        with self._lock:
            ids = list(range(self.next_id, self.next_id + nrows))
            self.next_id += nrows
            self._seq += 1
            seq = self._seq
        body = "".join(json.dumps({"id": i, "n": j, "part": f"p{i % 7}"}) + "\n" for j, i in enumerate(ids)).encode()
        etag = env.put(key, body)
        version = Version(key, etag, ids, len(body), f"{0x0055AED6DCD90281E5 + seq:018X}")
        with self._lock:
            if key in self.current:
                self.superseded.append(self.current[key])
            self.current[key] = version
        return version

    @property
    def identities(self) -> int:
        return len(self.current) + len(self.superseded)

    def rows(self) -> Counter[int]:
        return Counter(i for v in self.current.values() for i in v.ids)

    def key_of(self) -> dict[int, str]:
        return {i: v.key for v in [*self.current.values(), *self.superseded] for i in v.ids}


# -- crafted notifications ---------------------------------------------------------------------


def s3_record(bucket: str, v: Version, *, moto_style: bool) -> dict[str, Any]:
    """An S3 ObjectCreated:Put record as AWS sends it (``/`` kept) or as moto does (all encoded)."""
    return s3_notification_record(
        bucket,
        v.key,
        v.etag,
        v.size,
        sequencer=v.sequencer,
        event_time=datetime.now(UTC),
        region="us-east-1",
        encode_slash=moto_style,
    )


def s3_message(records: list[dict[str, Any]]) -> str:
    return json.dumps({"Records": records})


def sns_message(records: list[dict[str, Any]]) -> str:
    """The S3 notification wrapped by SNS (fan-out topic without raw delivery)."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:icefeed-chaos",
            "Subject": "Amazon S3 Notification",
            "Message": s3_message(records),
            "Timestamp": datetime.now(UTC).isoformat(),
        }
    )


# -- waiting ---------------------------------------------------------------------------------------


def wait_exit(proc: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    poll(lambda: proc.poll() is not None, timeout, what, interval=0.05)
    return int(proc.returncode)


def stop_all(env: Env, timeout: float = 60.0) -> list[int]:
    """SIGTERM every worker and wait for all of them; a worker still running after ``timeout`` is
    a hang: it gets SIGABRT (a thread dump in its log when started with PYTHONFAULTHANDLER=1),
    then SIGKILL, and the failure names it with the end of its log."""
    procs = list(env.workers)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    hung = []
    for index, proc in enumerate(procs):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung.append(index)
    if hung:
        for index in hung:
            procs[index].send_signal(signal.SIGABRT)
        for index in hung:
            try:
                procs[index].wait(timeout=5)
            except subprocess.TimeoutExpired:
                procs[index].kill()
                procs[index].wait()
        env.workers.clear()
        tails = []
        for log in sorted(env.tmp.glob("worker-*.log")):  # the hung ones never logged worker_stopped
            lines = log.read_text(errors="replace").splitlines()
            if not any('"worker_stopped"' in line for line in lines):
                tails.append(f"--- {log.name} (no worker_stopped), last lines:\n" + "\n".join(lines[-25:]))
        raise AssertionError(
            f"{len(hung)} worker(s) did not exit within {timeout:.0f} s of SIGTERM (seed {SEED}, logs in {env.tmp})\n"
            + "\n".join(tails)
        )
    env.workers.clear()
    return [int(p.returncode) for p in procs]


def loaded_count(env: Env) -> int:
    return int(env.sql("SELECT count(*) AS n FROM files WHERE status = 'LOADED'")[0]["n"])


def not_visible(env: Env) -> int:
    attrs = env.sqs.get_queue_attributes(
        QueueUrl=env.prov.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesNotVisible"])


def settled(env: Env, exp: Expected) -> bool:
    """Nothing can move any more: the queue is empty (no message waiting, none in flight or in a
    retry delay), no file is CLAIMED and no batch is WRITING. A PENDING file whose message is gone
    (dead-lettered) stays PENDING for ever: that is a lost file, reported by ``measure``."""
    if env.queue_depth() != 0:
        return False
    busy = "SELECT id FROM files WHERE status = 'CLAIMED' UNION ALL SELECT NULL FROM batches WHERE status = 'WRITING'"
    if env.sql(busy):
        return False
    return env.queue_depth() == 0


def settle(env: Env, exp: Expected, timeout: float = 120.0) -> None:
    poll(lambda: settled(env, exp), timeout, "the run to settle (queue drained, nothing CLAIMED or WRITING)", 0.25)


def table_rows(env: Env) -> list[dict[str, Any]]:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return env.table_rows("events")
    except NoSuchTableError:
        return []


# -- the exact check ---------------------------------------------------------------------------------


@dataclass
class Stats:
    scenario: str
    files: int = 0
    loaded: int = 0
    quarantined: int = 0
    failed: int = 0
    lost: int = 0
    duplicated_rows: int = 0
    missing_rows: int = 0
    unexpected_rows: int = 0
    lost_keys: list[str] = field(default_factory=list)
    suspect_keys: set[str] = field(default_factory=set)
    suspect_batches: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in REPORT_KEYS}


#: The ledger's files by identity (key, etag).
Ledger = dict[tuple[str, str], dict[str, Any]]


def measure(env: Env, exp: Expected, scenario: str) -> Stats:
    """The exact check: the ledger against the uploads, the table's rows against the current files'
    ids, each row's lineage, and the queues; every discrepancy becomes a count or a problem line."""
    files = env.files()
    batches = {str(b["id"]): b for b in env.sql("SELECT * FROM batches")}
    ledger = {(f["key"], f["etag"]): f for f in files}
    s = Stats(scenario, files=len(exp.current))
    s.quarantined = sum(f["status"] == "QUARANTINED" for f in files)
    s.failed = sum(f["status"] == "FAILED" for f in files)
    _check_current(s, exp, ledger)
    _check_superseded(s, exp, ledger)
    _check_ledger_rows(s, exp, files, batches)
    rows = table_rows(env)
    _check_row_counts(s, exp, rows)
    _check_lineage(s, exp, rows, ledger, batches)
    _check_queues(s, env)
    return s


def _check_current(s: Stats, exp: Expected, ledger: Ledger) -> None:
    """Every current version is LOADED with the number of rows uploaded; the others are lost."""
    for key, v in sorted(exp.current.items()):
        f = ledger.get((key, v.etag))
        if f is None or f["status"] != "LOADED":
            s.lost_keys.append(key)
            continue
        s.loaded += 1
        if f["rows_loaded"] != len(v.ids):
            s.problems.append(f"{key}: ledger rows_loaded={f['rows_loaded']}, uploaded {len(v.ids)} rows")
            s.suspect_keys.add(key)
    s.lost = len(s.lost_keys)


def _check_superseded(s: Stats, exp: Expected, ledger: Ledger) -> None:
    """Every overwritten version ends SKIPPED or REPLACED."""
    for v in exp.superseded:
        f = ledger.get((v.key, v.etag))
        if f is None or f["status"] not in ("SKIPPED", "REPLACED"):
            s.problems.append(f"{v.key} etag {v.etag}: overwritten version is {f and f['status']}")
            s.suspect_keys.add(v.key)


def _check_ledger_rows(
    s: Stats, exp: Expected, files: list[dict[str, Any]], batches: dict[str, dict[str, Any]]
) -> None:
    """No ledger file that was never uploaded, none left open, no batch left WRITING."""
    known = {(v.key, v.etag) for v in [*exp.current.values(), *exp.superseded]}
    for f in files:
        if (f["key"], f["etag"]) not in known:
            s.problems.append(f"unexpected ledger file {f['key']} etag {f['etag']} ({f['status']})")
        if f["status"] in OPEN:
            s.problems.append(f"{f['key']} stuck in {f['status']} (batch {f['batch_id']})")
            s.suspect_keys.add(f["key"])
    for b in batches.values():
        if b["status"] == "WRITING":
            s.problems.append(f"batch {b['id']} stuck WRITING (lease {b['lease_owner']} until {b['lease_expires_at']})")
            s.suspect_batches.add(str(b["id"]))


def _check_row_counts(s: Stats, exp: Expected, rows: list[dict[str, Any]]) -> None:
    """The table holds exactly the current files' ids, each as often as uploaded."""
    want, got, key_of = exp.rows(), Counter(r["id"] for r in rows), exp.key_of()
    s.duplicated_rows = sum(max(0, n - want[i]) for i, n in got.items())
    s.unexpected_rows = sum(n for i, n in got.items() if i not in want)
    s.missing_rows = sum(max(0, n - got[i]) for i, n in want.items())
    for i, n in got.items():
        if n != want[i]:
            s.suspect_keys.add(key_of.get(i, f"<unknown id {i}>"))
    for i, n in want.items():
        if got[i] < n:
            s.suspect_keys.add(key_of[i])
    if s.missing_rows:
        s.problems.append(f"{s.missing_rows} expected rows missing from the table")
    if s.unexpected_rows:
        s.problems.append(f"{s.unexpected_rows} rows in the table that no current file holds")


def _check_lineage(
    s: Stats, exp: Expected, rows: list[dict[str, Any]], ledger: Ledger, batches: dict[str, dict[str, Any]]
) -> None:
    """Lineage: each row names its file and the ledger's batch of that file, a COMMITTED batch."""
    key_of = exp.key_of()
    lineage_errors = 0
    for r in rows:
        key = key_of.get(r["id"])
        if key is None or key not in exp.current:
            continue
        v = exp.current[key]
        f = ledger.get((key, v.etag))
        want_source = f"s3://{exp.bucket}/{key}"
        batch = batches.get(r["_batch_id"])
        ok = (
            r["_source_file"] == want_source
            and f is not None
            and str(f["batch_id"]) == r["_batch_id"]
            and batch is not None
            and batch["status"] == "COMMITTED"
        )
        if not ok:
            lineage_errors += 1
            s.suspect_keys.add(key)
            s.suspect_batches.add(str(r["_batch_id"]))
            if lineage_errors <= 5:
                s.problems.append(
                    f"row id={r['id']} of {key}: _source_file={r['_source_file']} _batch_id={r['_batch_id']} "
                    f"(ledger batch {f and f['batch_id']}, batch status {batch and batch['status']})"
                )
    if lineage_errors > 5:
        s.problems.append(f"… {lineage_errors} rows with wrong lineage in all")


def _check_queues(s: Stats, env: Env) -> None:
    """Nothing dead-lettered, nothing left in the queue."""
    dlq = env.queue_depth(env.prov.dlq_url)
    if dlq:
        s.problems.append(f"{dlq} messages in the DLQ")
    depth = env.queue_depth()
    if depth:
        s.problems.append(f"{depth} messages left in the queue")


def finish(
    env: Env, exp: Expected, scenario: str, *, timeout: float = 120.0, error: BaseException | None = None
) -> Stats:
    """Settle, measure against the exact expectation, record the report row, then ASSERT."""
    if error is None:
        try:
            settle(env, exp, timeout)
        except AssertionError as exc:
            error = exc
    stats = measure(env, exp, scenario)
    REPORT.append(stats.row())
    assert stats.lost == 0, diagnose(env, exp, stats, error, f"{stats.lost} files not LOADED: {stats.lost_keys[:10]}")
    assert stats.duplicated_rows == 0, diagnose(env, exp, stats, error, f"{stats.duplicated_rows} duplicated rows")
    assert stats.missing_rows == 0, diagnose(env, exp, stats, error, f"{stats.missing_rows} rows missing")
    assert not stats.problems, diagnose(env, exp, stats, error, "; ".join(stats.problems[:5]))
    assert error is None, diagnose(env, exp, stats, error, "the run did not settle")
    return stats


def _compact(row: dict[str, Any], cols: Iterable[str]) -> str:
    return " ".join(f"{c}={row.get(c)}" for c in cols if row.get(c) is not None)


FILE_COLS = ("id", "key", "etag", "status", "attempts", "events_seen", "batch_id", "rows_loaded", "error_class")
BATCH_COLS = ("id", "status", "files", "rows_loaded", "lease_owner", "recovered_by", "error_class", "error_message")


def diagnose(env: Env, exp: Expected, s: Stats, error: BaseException | None, headline: str) -> str:
    """Everything needed to understand a failure: seed, ledger rows of the affected files and
    batches, and the worker log lines that mention them."""
    out = [f"{s.scenario}: {headline}", f"seed={SEED} env={env.tag} worker logs in {env.tmp}"]
    out.append(
        f"files={s.files} loaded={s.loaded} lost={s.lost} duplicated_rows={s.duplicated_rows} "
        f"missing_rows={s.missing_rows} unexpected_rows={s.unexpected_rows}"
    )
    if error is not None:
        out.append(f"error: {error}")
    out += [f"problem: {p}" for p in s.problems[:20]]
    keys = set(s.lost_keys) | s.suspect_keys
    files = [f for f in env.files() if f["key"] in keys or f["status"] != "LOADED"]
    out.append(f"ledger files ({len(files)} affected):")
    out += [
        "  " + _compact(f, FILE_COLS) + (f" error={f['error_message']!r}" if f["error_message"] else "")
        for f in files[:40]
    ]
    batch_ids = {str(f["batch_id"]) for f in files if f["batch_id"]} | s.suspect_batches
    batches = env.sql(
        "SELECT * FROM batches WHERE id::text = ANY($1::text[]) OR status <> 'COMMITTED' ORDER BY created_at",
        sorted(batch_ids),
    )
    out.append(f"ledger batches ({len(batches)}):")
    out += ["  " + _compact(b, BATCH_COLS) for b in batches[:40]]
    needles = {n for n in keys | batch_ids | {str(b["id"]) for b in batches} if n}
    lines = [
        line
        for line in env.worker_logs().splitlines()
        if any(n in line for n in needles) or '"level": "error"' in line or "Traceback" in line
    ]
    out.append(f"worker log lines ({len(lines)} matching, last 60):")
    out += ["  " + line[:400] for line in lines[-60:]]
    return "\n".join(out)


# -- fault helpers ------------------------------------------------------------------------------------


def sail_answers(stack: Any) -> bool:
    port = int(stack.spark_url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


SPARK_PING = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).create()
assert spark.sql("SELECT 41 + 1 AS x").collect()[0]["x"] == 42
spark.stop()
"""


def spark_round_trip(stack: Any) -> bool:
    """A real Spark Connect query against the (restarted) server, in a throwaway process."""
    done = subprocess.run(
        [sys.executable, "-c", SPARK_PING, stack.spark_url], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0


def _socket_inodes(pids: Iterable[int]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def client_ports(pids: Iterable[int], server_port: int) -> list[int]:
    """Local TCP ports of the connections these processes hold to ``server_port``."""
    inodes = _socket_inodes(pids)
    ports: list[int] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


TERMINATE = """
SELECT pg_terminate_backend(pid) AS killed
  FROM pg_stat_activity
 WHERE application_name = 'icefeed' AND pid <> pg_backend_pid()
   AND ($1::int[] IS NULL OR client_port = ANY($1::int[]))
"""


def _pg_port(env: Env) -> int | None:
    """The TCP port of PostgreSQL, or None for a private embedded server (whose icefeed backends are all
    this test's)."""
    return None if env.stack.pg_embedded else (urlparse(env.stack.pg_dsn).port or 5432)


async def _terminate(conn: asyncpg.Connection, env: Env, pids: Iterable[int]) -> int:
    """Terminate the ``icefeed`` backends of these worker processes (all ``icefeed`` backends on
    a private embedded server). On a shared PostgreSQL server only THIS test's workers are hit
    (matched by client port), so other sessions' icefeed workers are left alone."""
    port = _pg_port(env)
    ports = None if port is None else client_ports(pids, port)
    if ports == []:
        return 0
    rows = await conn.fetch(TERMINATE, ports)
    return sum(bool(r["killed"]) for r in rows)


def terminate_backends(env: Env, pids: Iterable[int]) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(env.stack.pg_dsn)
        try:
            return await _terminate(conn, env, list(pids))
        finally:
            await conn.close()

    return asyncio.run(go())


class PgKiller:
    """Terminates the workers' PostgreSQL backends every ``low``–``high`` seconds, in a thread."""

    def __init__(self, env: Env, rng: Any, low: float = 0.2, high: float = 0.6) -> None:
        self.env = env
        self.rng = rng
        self.low, self.high = low, high
        self.kills = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pg-killer")
        self._future: Future[None] | None = None

    def start(self) -> PgKiller:
        self._future = self._pool.submit(lambda: asyncio.run(self._run()))
        return self

    def stop(self) -> int:
        self._stop.set()
        assert self._future is not None
        try:
            self._future.result(timeout=30)
        finally:
            self._pool.shutdown(wait=True)
        return self.kills

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.env.stack.pg_dsn)
        try:
            while not self._stop.is_set():
                pids = [p.pid for p in self.env.workers if p.poll() is None]
                self.kills += await _terminate(conn, self.env, pids)
                self.rounds += 1
                # Chaos pacing (not a wait for a condition): the next kill comes at a random time.
                await asyncio.sleep(self.rng.uniform(self.low, self.high))
        finally:
            await conn.close()


# -- report -----------------------------------------------------------------------------------------


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [list(HEADERS)] + [[str(r[k]) for k in REPORT_KEYS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]

    def fmt(c: list[str]) -> str:
        return " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True)))

    return [fmt(cells[0]), "-|-".join("-" * w for w in widths), *(fmt(c) for c in cells[1:])]


def write_report(rows: list[dict[str, Any]], path: Path = REPORT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return path


def monotonic_ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)
