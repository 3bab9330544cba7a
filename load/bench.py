"""One benchmark run: start a local stack, then measure side by side on it

  ceiling  — a bare consumer (receive 10, GET each object, batch delete): the least work per file;
  naive    — the seed design's per-file loop (one Spark read + one Iceberg commit per file);
  drain1   — icefeed backlog drain with 1 worker;  drain_k — the same with K worker processes;
  latency  — a lone file on an idle worker, then upload→queryable latency under a paced load;
  soak     — (optional) a long paced load, for RSS flatness;

and finally check the table with pyiceberg against what was staged. Every figure is measured in
the run; every wait is bounded by a count and a deadline."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load.ceiling import CeilingRun, consume
from load.config import Scenario
from load.data import Generator, StagedFile, Uploader
from load.fleet import REPO_ROOT, Fleet, WorkerProc
from load.ledger import LedgerReader
from load.monitor import MotoLog, Sampler, SystemCpu, dead_server, rss_growth_pct, stack_processes
from load.naive import NaiveRun, run_naive
from load.verify import check, read_table
from worker.localstack import Stack
from worker.routes import parse_routes

ROUTE = """
[[ingestion]]
name = "{name}"
bucket = "{bucket}"
prefix = "{prefix}"
suffix = ".json"
format = "json"
table = "glue.{db}.{table}"
location = "s3://{warehouse}/{db}/{table}"
"""


class PhaseFailed(RuntimeError):
    pass


@dataclass
class Names:
    tag: str
    shards: int = 1

    @property
    def landing(self) -> list[str]:
        return [f"load-land-{self.tag}-{i}" for i in range(self.shards)]

    @property
    def ceiling(self) -> list[str]:
        return [f"load-ceil-{self.tag}-{i}" for i in range(self.shards)]

    @property
    def naive(self) -> str:
        return f"load-naive-{self.tag}"

    @property
    def warehouse(self) -> str:
        return f"load-wh-{self.tag}"

    @property
    def db(self) -> str:
        return f"load_{self.tag}"

    @property
    def schema(self) -> str:
        return f"load_{self.tag}"


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def offsets(times: list[float], start: float) -> dict[str, Any]:
    """Completion times as seconds since the phase started (sorted), for the chart."""
    return {"start": start, "done_s": sorted(round(max(0.0, t - start), 3) for t in times)}


def code_state() -> dict[str, Any]:
    """Which product code was measured: HEAD plus a digest of uncommitted changes to it."""

    def git(*args: str) -> str:
        out = subprocess.run(  # noqa: S603 - fixed argv
            ["git", *args],  # noqa: S607 - git from PATH
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout

    try:
        diff = git("diff", "HEAD", "--", "worker", "migrations")
        return {
            "git_head": git("rev-parse", "HEAD").strip(),
            "uncommitted_product_changes": bool(diff),
            "product_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
        }
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}


class Bench:
    def __init__(self, sc: Scenario, say: Callable[[str], None]) -> None:
        self.sc = sc
        self.say = say
        self.names = Names(uuid.uuid4().hex[:8], sc.shards())
        self._next_bucket = 0
        self.gen = Generator(sc.rows_per_file, sc.drift_pct, sc.bad_pct, sc.seed)
        self.phases: dict[str, dict[str, Any]] = {}
        self.timeline: dict[str, dict[str, Any]] = {}
        self.staged: list[StagedFile] = []  # every file staged for icefeed (the events table)
        self.naive_staged: list[StagedFile] = []
        self.worker_labels: list[str] = []
        self.errors: list[str] = []
        self.run_started = time.time()

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        sc = self.sc
        own_workdir = sc.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="icefeed-load-")) if sc.workdir is None else sc.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.say(f"workdir {workdir}; starting the local stack (moto, Sail, PostgreSQL)")
        loadavg_start = os.getloadavg()
        stack = Stack(workdir / "stack").start()
        self.stack = stack
        self.sampler = Sampler(sc.sample_interval_s)
        ledger: LedgerReader | None = None
        fleet: Fleet | None = None
        uploader: Uploader | None = None
        try:
            self.stack_pids = stack_processes()
            for label, pid in self.stack_pids.items():
                self.sampler.watch(label, pid)
            self.sampler.watch("harness", os.getpid())
            self.sampler.start()
            self._provision(workdir)
            queues = ",".join(self.queues["events"])
            fleet = Fleet(stack, queues, self.routes_file, self.names.schema, workdir, sc.worker_env)
            self.fleet = fleet
            fleet.migrate()
            ledger = LedgerReader(stack.pg_dsn, self.names.schema)
            self.ledger = ledger
            uploader = Uploader(lambda: stack.client("s3"), self.gen, sc.upload_threads)
            self.uploader = uploader
            self.sqs = stack.client("sqs")
            self.moto_log = MotoLog(
                workdir / "stack" / "moto.log",
                {
                    **dict.fromkeys(self.names.landing, "landing"),
                    **dict.fromkeys(self.names.ceiling, "ceiling"),
                    self.names.naive: "naive",
                    self.names.warehouse: "warehouse",
                },
            )
            self.say(
                f"stack up: moto {stack.moto_url}, Sail {stack.spark_url}, "
                f"PostgreSQL {'embedded' if stack.pg_embedded else 'local'}; ledger schema {self.names.schema}; "
                f"{self.names.shards} landing bucket(s) and queue(s) per loader"
            )
            steps: list[tuple[str, Callable[[], None]]] = [
                ("ceiling", self.phase_ceiling),
                ("naive", self.phase_naive),
                ("drain1", lambda: self.phase_drain("drain1", 1)),
                ("latency", self.phase_latency),
                ("drain_k", lambda: self.phase_drain("drain_k", sc.k)),
                ("soak", self.phase_soak),
            ]
            for name, step in steps:
                if not sc.wants(name):
                    continue
                self.say(f"── phase {name}")
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - record, stop the run, still report
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    self.say(f"phase {name} FAILED: {type(exc).__name__}: {exc}")
                    fleet.kill_all()
                    break
            self.say("── verifying the table with pyiceberg")
            correctness = self.verify()
            report = self.assemble(correctness, loadavg_start, fleet)
            return report
        finally:
            self.sampler.stop()
            tear_down(
                self.say, self.names.schema, sc.keep, stack, fleet, uploader, ledger, workdir if own_workdir else None
            )

    def _provision(self, workdir: Path) -> None:
        """One bucket → one queue (a bucket has one notification configuration). Every landing
        bucket routes into the same table; the ceiling gets as many buckets and queues."""
        n = self.names

        def route(kind: str, i: int, bucket: str, prefix: str, table: str) -> str:
            return ROUTE.format(
                name=f"{kind}_{i}", bucket=bucket, prefix=prefix, db=n.db, table=table, warehouse=n.warehouse
            )

        events = [route("events", i, b, "events/", "events") for i, b in enumerate(n.landing)]
        self.routes_file = workdir / "routes.toml"
        self.routes_file.write_text("".join(events))
        self.queues: dict[str, list[str]] = {"events": [], "ceiling": [], "naive": []}
        shards = [("events", i, text) for i, text in enumerate(events)]
        shards += [("ceiling", i, route("ceiling", i, b, "ceil/", "ceiling")) for i, b in enumerate(n.ceiling)]
        shards += [("naive", 0, route("naive", 0, n.naive, "naive/", "naive"))]
        for kind, i, text in shards:
            prov = self.stack.provision(parse_routes(text), queue_name=f"load-{kind}-{n.tag}-{i}", max_receive_count=5)
            self.queues[kind].append(prov.queue_url)

    def _bucket(self, buckets: list[str]) -> str:
        """Spread files over the shards round-robin."""
        self._next_bucket += 1
        return buckets[self._next_bucket % len(buckets)]

    # -- measuring helpers -------------------------------------------------------------------

    def _meter_start(self) -> dict[str, Any]:
        return {
            "t": time.time(),
            "moto_offset": self.moto_log.offset(),
            "system": SystemCpu(),
            "cpu": {label: self.sampler.cpu(label) for label in ("moto", "sail", "harness")},
        }

    def _meter_end(self, start: dict[str, Any], files: int, workers: list[WorkerProc] | None = None) -> dict[str, Any]:
        cpu = {label: self.sampler.cpu(label) - before for label, before in start["cpu"].items()}
        if workers:
            cpu["workers"] = sum(self.sampler.cpu(w.label) for w in workers)
        requests = self.moto_log.count(start["moto_offset"], self.moto_log.offset())
        per_1000 = {k: round(v / files * 1000, 2) for k, v in cpu.items()} if files else {}
        return {
            "system_cpu_busy_pct": round(start["system"].busy() * 100, 1),
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
            "cpu_s_per_1000_files": per_1000,
            "moto_requests": requests,
            "moto_requests_per_file": {k: round(v / files, 3) for k, v in requests.items()} if files else {},
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }

    def _wait_depth(self, queues: list[str], n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        depth = 0
        while time.monotonic() < deadline:
            depth = 0
            for queue in queues:
                attrs = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
                depth += int(attrs["Attributes"]["ApproximateNumberOfMessages"])
            if depth >= n:
                return
            time.sleep(0.2)
        raise PhaseFailed(f"only {depth} of {n} notifications reached the queue within {timeout_s:.0f} s")

    def _stage(self, files: list[StagedFile], queues: list[str], quiet: bool = False) -> float:
        seconds = self.uploader.backlog(files, self.sc.phase_timeout_s, lambda m: self.say("  " + m))
        self._wait_depth(queues, len(files))
        rate = len(files) / seconds
        if not quiet:
            self.say(f"  staged {len(files)} files in {seconds:.1f} s ({rate:.0f} files/s); the queue holds them")
        return seconds

    def _purge_test_event(self, queues: list[str]) -> None:
        """Configuring notifications queued an s3:TestEvent: take it out before timing anything."""
        for queue in queues:
            for _ in range(3):
                messages = self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                    "Messages", []
                )
                for m in messages:
                    self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                if messages:
                    break

    def _wait_final(self, prefix: str, n: int, what: str, workers: list[WorkerProc], started: float) -> tuple[int, int]:
        """Poll the ledger until ``n`` files under ``prefix`` are final; bounded by the phase
        timeout and by a stall (no progress for stall_timeout_s)."""
        deadline = time.monotonic() + self.sc.phase_timeout_s
        last_progress = time.monotonic()
        last_note = time.monotonic()
        best = -1
        total = final = 0
        while time.monotonic() < deadline:
            total, final = self.ledger.progress(prefix)
            if final >= n:
                return total, final
            if final > best:
                best, last_progress = final, time.monotonic()
            elif time.monotonic() - last_progress > self.sc.stall_timeout_s:
                raise PhaseFailed(f"{what}: no progress for {self.sc.stall_timeout_s:.0f} s ({final}/{n} final)")
            self.fleet.alive(workers)
            self._stack_alive()
            if time.monotonic() - last_note >= 5:
                last_note = time.monotonic()
                elapsed = time.time() - started
                rate = final / elapsed
                self.say(f"  {what}: {final}/{n} final, {total} registered, {elapsed:.0f} s, {rate:.1f} files/s")
            time.sleep(0.25)
        raise PhaseFailed(f"{what}: {final}/{n} final after {self.sc.phase_timeout_s:.0f} s")

    def _stack_alive(self) -> None:
        dead = dead_server(self.stack_pids, self.workdir / "stack")
        if dead:
            raise PhaseFailed(dead)

    def _start_workers(self, phase: str, count: int, profile: bool = False) -> list[WorkerProc]:
        procs = []
        for i in range(count):
            spy = self.sc.py_spy_dir / f"{phase}.txt" if profile and self.sc.py_spy_dir and i == 0 else None
            proc = self.fleet.start(f"{phase}-{i}", spy)
            self.sampler.watch(proc.label, proc.pid)
            self.worker_labels.append(proc.label)
            procs.append(proc)
        return procs

    def _stop_workers(self, procs: list[WorkerProc]) -> dict[str, Any]:
        grace = float(self.fleet.env().get("ICEFEED_SHUTDOWN_GRACE_S", "30"))
        wait_s = float(self.fleet.env().get("ICEFEED_SQS_WAIT_TIME_S", "20"))
        t = time.monotonic()
        self.fleet.stop(procs, timeout_s=grace + wait_s + 30)
        for proc in procs:
            self.sampler.unwatch(proc.label)
        calls: dict[str, int] = {}
        for proc in procs:
            for op, n in (proc.stopped.get("sqs_calls") or {}).items():
                calls[op] = calls.get(op, 0) + int(n)
        held = [float(c["held_s"]) for p in procs for c in p.commits]
        waits = [float(c.get("lock_wait_s", 0.0)) for p in procs for c in p.commits]
        return {
            "stop_s": round(time.monotonic() - t, 1),
            # The table lock's hold per commit (append + finalize): one table takes <= 1/hold commits/s.
            "commit_hold_s_p50": rnd(percentile(held, 50)),
            "commit_hold_s_p95": rnd(percentile(held, 95)),
            "lock_wait_s_p50": rnd(percentile(waits, 50)),
            "exit_codes": [p.exit_code for p in procs],
            "worker_stopped": [
                {k: p.stopped.get(k) for k in ("received", "acked", "requeued", "empty_receives", "sqs_calls")}
                for p in procs
            ],
            "sqs_calls": calls,
            # Long polls that returned nothing (part of ReceiveMessage): a drain's tail, mostly.
            "empty_receives": sum(int(p.stopped.get("empty_receives") or 0) for p in procs),
        }

    def _batch_stats(self, prefix: str, files: int) -> dict[str, Any]:
        batches = self.ledger.batches(prefix)
        committed = [b for b in batches if b["status"] == "COMMITTED"]
        durations = [b["finished_at"] - b["created_at"] for b in committed if b["finished_at"]]
        sizes = [b["files"] for b in committed]
        return {
            "committed_batches": len(committed),
            "other_batches": len(batches) - len(committed),
            "commits_per_1000_files": rnd(len(committed) / files * 1000, 2) if files else None,
            "files_per_batch_mean": rnd(statistics.mean(sizes), 1) if sizes else None,
            "files_per_batch_max": max(sizes) if sizes else None,
            "batch_seconds_p50": rnd(percentile(durations, 50)),
            "batch_seconds_max": rnd(max(durations)) if durations else None,
            "batch_seconds_sum": rnd(sum(durations), 1),
        }

    # -- phases ------------------------------------------------------------------------------

    def phase_ceiling(self) -> None:
        """Each concurrency level drains a freshly staged sample of its own; the best level then
        drains a backlog as deep as the icefeed drains' (moto's SQS costs grow with the depth
        of the queue, so the ceiling must face the same depth to be a ceiling)."""
        sc = self.sc
        queue = self.queues["ceiling"]
        self._purge_test_event(queue)
        tuning: list[CeilingRun] = []
        for level in sc.ceiling_levels:
            sample = [
                self.gen.make("ceiling", self._bucket(self.names.ceiling), "ceil/", clean=True)
                for _ in range(sc.ceiling_tune_msgs)
            ]
            self._stage(sample, queue, quiet=True)
            run = consume(self.stack.moto_url, queue, sc.ceiling_tune_msgs, level, sc.phase_timeout_s)
            tuning.append(run)
            self.say(f"  ceiling tuning: concurrency {level:>2}: {run.msgs_per_s:.1f} msgs/s ({run.files} files)")
        best = max(tuning, key=lambda r: r.msgs_per_s)
        target = sc.ceiling_msgs if sc.ceiling_msgs else sc.files
        backlog = [
            self.gen.make("ceiling", self._bucket(self.names.ceiling), "ceil/", clean=True) for _ in range(target)
        ]
        self._stage(backlog, queue)
        meter = self._meter_start()
        final = consume(self.stack.moto_url, queue, target, best.concurrency, sc.phase_timeout_s)
        if final.files < target:
            raise PhaseFailed(f"ceiling consumed {final.files} of {target} messages")
        self.say(f"  ceiling: {final.msgs_per_s:.1f} msgs/s at concurrency {best.concurrency} ({final.files} files)")
        self.phases["ceiling"] = {
            "msgs_per_s": rnd(final.msgs_per_s, 1),
            "concurrency": best.concurrency,
            "files": final.files,
            "seconds": rnd(final.seconds, 2),
            "receives": final.receives,
            "bytes_read": final.bytes_read,
            "tuning": [{"concurrency": r.concurrency, "msgs_per_s": rnd(r.msgs_per_s, 1)} for r in tuning],
            **self._meter_end(meter, final.files),
        }
        self.timeline["ceiling"] = offsets(final.completions, final.started)

    def phase_naive(self) -> None:
        sc = self.sc
        self._purge_test_event(self.queues["naive"])
        files = [self.gen.make("naive", self.names.naive, "naive/", clean=True) for _ in range(sc.naive_files)]
        self._stage(files, self.queues["naive"])
        self.naive_staged = files
        meter = self._meter_start()
        n = self.names
        run: NaiveRun = run_naive(
            self.stack.spark_url,
            self.sqs,
            self.queues["naive"][0],
            f"glue.{n.db}.naive",
            f"s3://{n.warehouse}/{n.db}/naive",
            sc.naive_files,
            sc.phase_timeout_s,
        )
        if run.files < sc.naive_files:
            raise PhaseFailed(f"naive loop loaded {run.files} of {sc.naive_files} files")
        view = read_table(self.stack.moto_url, f"{n.db}.naive")
        naive_check = check(files, view, [])
        self.say(
            f"  naive: {run.files_per_s:.2f} files/s ({run.files} files; per file read {run.read_s / run.files:.3f} s,"
            f" append {run.append_s / run.files:.3f} s, sqs {run.sqs_s / run.files:.3f} s)"
        )
        self.phases["naive"] = {
            "files_per_s": rnd(run.files_per_s, 3),
            "files": run.files,
            "seconds": rnd(run.finished - run.started, 2),
            "session_and_table_s": rnd(run.session_s, 2),
            "per_file_s": {
                "plan": rnd(run.read_s / run.files, 4),
                "append_commit": rnd(run.append_s / run.files, 4),
                "sqs": rnd(run.sqs_s / run.files, 4),
            },
            "table_check": {k: naive_check[k] for k in ("lost_files", "duplicated_rows", "table_rows", "staged_rows")},
            **self._meter_end(meter, run.files),
        }
        self.timeline["naive"] = offsets(run.completions, run.started)

    def phase_drain(self, name: str, workers: int) -> None:
        sc = self.sc
        prefix = f"events/{name}/"
        files = [self.gen.make(name, self._bucket(self.names.landing), prefix) for _ in range(sc.files)]
        self.staged.extend(files)
        stage_s = self._stage(files, self.queues["events"])
        meter = self._meter_start()
        started = time.time()
        procs = self._start_workers(name, workers, profile=(name == "drain1"))
        self._wait_final(prefix, len(files), name, procs, started)
        worker_cpu = sum(self.sampler.cpu(p.label) for p in procs)
        peak_rss = {p.label: max((s.rss for s in self.sampler.series(p.label)), default=0) for p in procs}
        metered = self._meter_end(meter, len(files), procs)
        self.say(f"  {name}: all {len(files)} files final; stopping {workers} worker(s)")
        stopped = self._stop_workers(procs)
        rows = self.ledger.files(prefix)
        finished = [r["finished_at"] for r in rows if r["finished_at"]]
        last = max(finished)
        first = min(finished)
        seconds = last - started
        loaded_rows = sum(int(r["rows_loaded"] or 0) for r in rows if r["status"] == "LOADED")
        after_first = sum(1 for t in finished if t > first)
        result = {
            "workers": workers,
            "files": len(files),
            "stage_s": rnd(stage_s, 1),
            "seconds": rnd(seconds, 2),
            "files_per_s": rnd(len(files) / seconds, 2),
            "rows_per_s": rnd(loaded_rows / seconds, 1),
            "first_commit_s": rnd(first - started, 2),
            "files_per_s_after_first_commit": rnd(after_first / (last - first), 2) if last > first else None,
            "worker_cpu_s": rnd(worker_cpu, 2),
            "worker_cpu_s_per_1000_files": rnd(worker_cpu / len(files) * 1000, 2),
            "worker_peak_rss_mb": {k: rnd(v / 2**20, 1) for k, v in peak_rss.items()},
            "sqs_calls_per_file": rnd(sum(stopped["sqs_calls"].values()) / len(files), 4),
            **self._batch_stats(prefix, len(files)),
            **metered,
            **stopped,
            "window": [started, last],
        }
        self.phases[name] = result
        self.timeline[name] = offsets(finished, started)
        self.say(
            f"  {name}: {result['files_per_s']} files/s, {result['rows_per_s']} rows/s over {seconds:.1f} s; "
            f"{result['committed_batches']} commits, first commit after {result['first_commit_s']} s"
        )

    def _one_file(self, phase: str, prefix: str, name: str, worker: WorkerProc, timeout_s: float = 120) -> float:
        f = self.gen.make(phase, self._bucket(self.names.landing), prefix, clean=True, name=name)
        self.staged.append(f)
        self.uploader.put(f)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = [r for r in self.ledger.files(prefix + name) if r["finished_at"]]
            if rows:
                if rows[0]["status"] != "LOADED":
                    raise PhaseFailed(f"{f.key} ended {rows[0]['status']} ({rows[0]['error_class']})")
                return float(rows[0]["finished_at"]) - f.put_at
            self.fleet.alive([worker])
            self._stack_alive()
            time.sleep(0.05)
        raise PhaseFailed(f"{f.key} not loaded within {timeout_s:.0f} s")

    def _paced_rate(self, explicit: float | None) -> float:
        if explicit:
            return explicit
        drain = self.phases.get("drain1")
        if drain and drain.get("files_per_s"):
            return max(0.5, self.sc.paced_fraction * float(drain["files_per_s"]))
        raise PhaseFailed("no 1-worker throughput measured: pass --paced-rate (and --soak-rate)")

    def phase_latency(self) -> None:
        sc = self.sc
        rate = self._paced_rate(sc.paced_rate)
        procs = self._start_workers("latency", 1)
        worker = procs[0]
        self.fleet.wait_started(procs)
        meter = self._meter_start()
        started = time.time()
        warm = self._one_file("lone", "events/lone/", "warm-up.json", worker)
        self.say(f"  warm-up file (first batch of a fresh worker): {warm:.2f} s")
        lone: list[float] = []
        for i in range(sc.lone_files):
            time.sleep(sc.lone_gap_s)  # the worker is idle: its receivers sit in a long poll
            latency = self._one_file("lone", "events/lone/", f"lone-{i:03d}.json", worker)
            lone.append(latency)
            self.say(f"  lone file {i + 1}/{sc.lone_files}: {latency:.2f} s upload→queryable")
        count = max(10, round(rate * sc.paced_seconds))
        self.say(f"  paced load: {count} files at {rate:.1f} files/s (half of the 1-worker drain rate)")
        source = (self.gen.make("paced", self._bucket(self.names.landing), "events/paced/") for _ in range(count))
        paced, achieved = self.uploader.paced(source, count, rate, sc.phase_timeout_s, lambda m: self.say("  " + m))
        self.staged.extend(paced)
        self._wait_final("events/paced/", len(paced), "paced", procs, started)
        metered = self._meter_end(meter, len(paced) + len(lone) + 1, procs)
        series = self.sampler.series(worker.label)
        stopped = self._stop_workers(procs)
        by_key = {r["key"]: r for r in self.ledger.files("events/paced/")}
        latencies = [
            by_key[f.key]["finished_at"] - f.put_at
            for f in paced
            if f.key in by_key and by_key[f.key]["status"] == "LOADED" and by_key[f.key]["finished_at"]
        ]
        finished = [by_key[f.key]["finished_at"] for f in paced if f.key in by_key and by_key[f.key]["finished_at"]]
        paced_start = min(f.put_at for f in paced)
        result = {
            "warm_up_s": rnd(warm, 3),
            "lone_latency_s": rnd(statistics.median(lone), 3) if lone else None,
            "lone_latencies_s": [rnd(x, 3) for x in lone],
            "seconds": rnd((max(finished) if finished else time.time()) - started, 2),
            "paced_files": len(paced),
            "paced_rate_target": rnd(rate, 2),
            "paced_rate_achieved": rnd(achieved, 2),
            "latency_measured_files": len(latencies),
            "p50_latency_s": rnd(percentile(latencies, 50)),
            "p95_latency_s": rnd(percentile(latencies, 95)),
            "p99_latency_s": rnd(percentile(latencies, 99)),
            "max_latency_s": rnd(max(latencies)) if latencies else None,
            "rss_growth_pct": rss_growth_pct(series),
            **self._batch_stats("events/paced/", len(paced)),
            **metered,
            **stopped,
            "sqs_calls_per_file": rnd(sum(stopped["sqs_calls"].values()) / max(1, len(paced) + len(lone) + 1), 4),
            "window": [started, max(finished) if finished else time.time()],
        }
        self.phases["latency"] = result
        self.latencies = latencies
        self.timeline["paced"] = offsets(finished, paced_start)
        self.say(
            f"  latency: lone {result['lone_latency_s']} s; paced p50 {result['p50_latency_s']} s, "
            f"p95 {result['p95_latency_s']} s, p99 {result['p99_latency_s']} s"
        )

    def phase_soak(self) -> None:
        sc = self.sc
        rate = self._paced_rate(sc.soak_rate or sc.paced_rate)
        procs = self._start_workers("soak", 1)
        self.fleet.wait_started(procs)
        meter = self._meter_start()
        started = time.time()
        self.say(f"  soak: {sc.soak_files} files at {rate:.1f} files/s (~{sc.soak_files / rate / 60:.1f} min)")
        source = (self.gen.make("soak", self._bucket(self.names.landing), "events/soak/") for _ in range(sc.soak_files))
        staged, achieved = self.uploader.paced(
            source, sc.soak_files, rate, sc.phase_timeout_s + sc.soak_files / rate, lambda m: self.say("  " + m)
        )
        self.staged.extend(staged)
        self._wait_final("events/soak/", len(staged), "soak", procs, started)
        metered = self._meter_end(meter, len(staged), procs)
        series = self.sampler.series(procs[0].label)
        stopped = self._stop_workers(procs)
        rss = [s.rss for s in series]
        self.phases["soak"] = {
            "files": len(staged),
            "rate_target": rnd(rate, 2),
            "rate_achieved": rnd(achieved, 2),
            "seconds": rnd(time.time() - started, 1),
            "rss_growth_pct": rss_growth_pct(series),
            "rss_mb_min": rnd(min(rss) / 2**20, 1) if rss else None,
            "rss_mb_max": rnd(max(rss) / 2**20, 1) if rss else None,
            **self._batch_stats("events/soak/", len(staged)),
            **metered,
            **stopped,
            "window": [started, time.time()],
        }
        self.say(f"  soak: RSS growth {self.phases['soak']['rss_growth_pct']} % after warm-up")

    # -- the end -----------------------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        if not self.staged:
            return {"lost_files": 0, "duplicated_rows": 0, "staged_files": 0, "note": "no icefeed phase ran"}
        self.ledger_files = self.ledger.files("events/")
        try:
            self.view = read_table(self.stack.moto_url, f"{self.names.db}.events")
        except Exception as exc:  # noqa: BLE001 - a missing table means every file was lost
            self.say(f"  cannot read the events table: {exc}")
            from load.verify import TableView

            self.view = TableView()
        result = check(self.staged, self.view, self.ledger_files)
        self.say(
            f"  {result['table_rows']} rows in the table for {result['staged_files']} staged files: "
            f"lost_files {result['lost_files']}, short_files {result['short_files']}, "
            f"duplicated_rows {result['duplicated_rows']}, stray_rows {result['stray_rows']}, "
            f"ledger mismatches {result['ledger_mismatches']}; ledger statuses {result['ledger_statuses']}"
        )
        return result

    def _effective_settings(self) -> dict[str, Any]:
        code = (
            "import json; from worker.settings import load_settings; s = load_settings(); "
            "print(json.dumps({'sqs': s.sqs.model_dump(exclude={'queue_urls'}), 'batch': s.batch.model_dump(), "
            "'spark': s.spark.model_dump(include={'concurrency', 'dialect', 'client_retries'}), "
            "'pg': s.pg.model_dump(include={'pool_min', 'pool_max'}), 'lease': s.lease.model_dump(), "
            "'shutdown_grace_s': s.shutdown_grace_s, 'log_level': s.log_level}))"
        )
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv
                [sys.executable, "-c", code],
                env=self.fleet.env(),
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            value: dict[str, Any] = json.loads(out.stdout)
            return value
        except (subprocess.SubprocessError, ValueError) as exc:
            return {"error": str(exc)}

    def assemble(self, correctness: dict[str, Any], loadavg_start: tuple[float, ...], fleet: Fleet) -> dict[str, Any]:
        p = self.phases
        ceiling = p.get("ceiling", {}).get("msgs_per_s")
        naive = p.get("naive", {}).get("files_per_s")
        f1 = p.get("drain1", {}).get("files_per_s")
        fk = p.get("drain_k", {}).get("files_per_s")
        drains = [p[n] for n in ("drain1", "drain_k") if n in p]
        drain_files = sum(d["files"] for d in drains)
        commits = sum(d["committed_batches"] for d in drains)
        calls = sum(sum(d["sqs_calls"].values()) for d in drains)
        view = getattr(self, "view", None)
        appends = [s for s in view.snapshots if s["operation"] == "append"] if view is not None else []
        data_files = [s["added_data_files"] for s in appends]
        for d in p.values():
            window = d.get("window")
            if window:
                lo, hi = window[0] * 1000, window[1] * 1000 + 1000
                mine = [s["added_data_files"] for s in appends if lo <= s["timestamp_ms"] <= hi]
                d["data_files_per_commit"] = rnd(statistics.mean(mine), 2) if mine else None
                d["snapshots"] = len(mine)
        latency = p.get("latency", {})
        rss_source = "soak" if "soak" in p else "latency"
        ok = not self.errors and all(
            correctness.get(k, 0) == 0
            for k in ("lost_files", "duplicated_rows", "short_files", "stray_rows", "ledger_mismatches")
        )
        report: dict[str, Any] = {
            "ok": ok,
            "errors": self.errors,
            "ceiling_msgs_per_s": ceiling,
            "naive_files_per_s": naive,
            "files_per_s_1": f1,
            "files_per_s_k": fk,
            "k": self.sc.k,
            "landing_queues": self.names.shards,
            "rows_per_s_1": p.get("drain1", {}).get("rows_per_s"),
            "rows_per_s_k": p.get("drain_k", {}).get("rows_per_s"),
            "icefeed_vs_ceiling": ratio(fk, ceiling),
            "icefeed_vs_naive": ratio(fk, naive),
            "icefeed_1_vs_ceiling": ratio(f1, ceiling),
            "icefeed_1_vs_naive": ratio(f1, naive),
            "commits_per_1000_files": rnd(commits / drain_files * 1000, 2) if drain_files else None,
            "data_files_per_commit": rnd(statistics.mean(data_files), 2) if data_files else None,
            "sqs_calls_per_file": rnd(calls / drain_files, 4) if drain_files else None,
            "lone_latency_s": latency.get("lone_latency_s"),
            "p50_latency_s": latency.get("p50_latency_s"),
            "p95_latency_s": latency.get("p95_latency_s"),
            "p99_latency_s": latency.get("p99_latency_s"),
            "rss_growth_pct": p.get(rss_source, {}).get("rss_growth_pct"),
            "rss_growth_source": rss_source,
            "cpu_s_per_1000_files_1": p.get("drain1", {}).get("worker_cpu_s_per_1000_files"),
            "cpu_s_per_1000_files_k": p.get("drain_k", {}).get("worker_cpu_s_per_1000_files"),
            "lost_files": correctness.get("lost_files"),
            "duplicated_rows": correctness.get("duplicated_rows"),
            "correctness": correctness,
            "phases": p,
            "settings": {
                "scenario": self.sc.as_dict(),
                "worker_env": fleet.settings_env(),
                "effective": self._effective_settings(),
            },
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg_start": [round(x, 2) for x in loadavg_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "pg_embedded": self.stack.pg_embedded,
            },
            "code": code_state(),
            "started_at": self.run_started,
            "wall_s": rnd(time.time() - self.run_started, 1),
            "timeline": self.timeline,
            "latencies_s": [rnd(x, 3) for x in getattr(self, "latencies", [])],
            "rss_mb": {
                label: [[rnd(s.t - self.run_started, 1), rnd(s.rss / 2**20, 1)] for s in self._thin(label)]
                for label in [*self.worker_labels, "moto", "sail"]
            },
        }
        return report

    def _thin(self, label: str, points: int = 600) -> list[Any]:
        series = self.sampler.series(label)
        step = max(1, len(series) // points)
        return series[::step]


def tear_down(
    say: Callable[[str], None],
    schema: str,
    keep: bool,
    stack: Stack,
    fleet: Fleet | None,
    uploader: Uploader | None,
    ledger: LedgerReader | None,
    own_workdir: Path | None,
) -> None:
    """Stop what a scenario started: workers, uploads, its ledger schema (unless ``keep``), the
    local stack and the work directory it made (``own_workdir``, unless ``keep``)."""
    if fleet is not None:
        fleet.kill_all()
    if uploader is not None:
        uploader.close()
    if ledger is not None:
        if not keep:
            try:
                ledger.drop_schema()
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                say(f"could not drop ledger schema {schema}: {exc}")
        ledger.close()
    say("stopping the local stack")
    stack.stop()
    if own_workdir is not None and not keep:
        shutil.rmtree(own_workdir, ignore_errors=True)
