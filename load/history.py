"""``python -m load history`` — the long-history scenario (issue 14, "measure first").

One table receives ``commits`` small commits of exactly ``files_per_commit`` files each, from one
real ``python -m worker run`` process on a local stack (moto + Sail + PostgreSQL, started here);
once per maintenance mode (``--maintenance off,on``), one mode after the other, each on a table,
landing bucket, queue and routes file of its own (``events_off``, ``events_on``).

How one commit is made exactly F files (round by round, never a race):

- the worker runs with ``ICEFEED_BATCH_MAX_FILES=F`` and a long ``ICEFEED_BATCH_MAX_WAIT_S``
  (30 s): a batch closes when it holds F files, not on a timer;
- each round uploads F new files at once, then waits until the ledger shows all F final; only
  then does the next round upload. The batch of a round is therefore full (F files) as soon as
  its F notifications arrive, and no file of the next round can join it.

The ledger's batches are checked at the end (``batches_exact`` = batches of exactly F files) and
the table's append snapshots are counted: one snapshot per commit (until maintenance expires some).

Recorded per commit: the table lock's hold (``held_s`` of the worker's ``batch_committed`` log
line: append + ledger finalize, the time other commits to the table wait) and the round time
(first PUT → last file final). Every ``sample_every``-th commit (and the first and the last),
pyiceberg on the same moto records: the size of the current ``metadata.json`` (HEAD of
``table.metadata_location``), the objects and bytes under the table's ``metadata/`` prefix,
the manifests and live data files of the current snapshot, the snapshot count, and the wall
time of ``table.scan().plan_files()`` (median of ``plan_repeats``; the table is loaded once per
sample, so the manifest list is read once and each manifest on every repeat).

Maintenance is the worker's own: a mode is the ``[maintenance]`` block of its routes file
(``MAINTENANCE_ON``, or ``enabled = false``). The worker's ``maintenance_step`` log lines (one per
step: expire, compact, orphans, properties) are kept per run with their lock holds, the longest
wait maintenance imposed on an append. With maintenance on, the run ends only once the worker has
logged a step after the last commit (its next check).

The report (JSON) keeps one curve per mode under ``runs`` and one plot draws every mode in each
panel. Each run's ``summary`` has the checkpoints, the growth of hold p95, metadata.json, data
files and planning from commit 500 to the last (``flatness``), and the maintenance steps."""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import statistics
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from load.bench import ROUTE, Names, code_state, percentile, ratio, rnd, tear_down
from load.config import Harness, add_harness_args, overrides_from_args
from load.data import Generator, StagedFile, Uploader
from load.fleet import Fleet, WorkerProc, events_from
from load.ledger import LedgerReader
from load.monitor import dead_server, stack_processes
from load.verify import check, read_table
from worker.domain.errors import ConfigError
from worker.localstack import Stack, iceberg_catalog
from worker.routes import parse_routes

#: Maintenance modes the scenario knows. A mode is a curve in the report and in the plot, made on
#: a table of its own (``events_<mode>``).
MODES = ("off", "on")

#: The ``[maintenance]`` block mode ``on`` writes into its routes file: the real settings on a
#: compressed timeline (checks every 5 s, snapshots older than 30 s expire, compaction once 20
#: small files are live), so that a few thousand commits see hundreds of checks. ``off`` writes
#: ``enabled = false``.
MAINTENANCE_ON: dict[str, Any] = {
    "enabled": True,
    "check_interval_s": 5,
    "min_snapshots_to_keep": 20,
    "max_snapshot_age_s": 30,
    "target_file_size_mb": 64,
    "compact_min_files": 20,
    "orphan_min_age_s": 600,
    "orphan_interval_s": 60,
    "metadata_previous_versions": 10,
    "max_lock_wait_s": 5,
}
MAINTENANCE_OFF: dict[str, Any] = {"enabled": False}

#: Commits at which the summary reports the figures (plus the last commit).
CHECKPOINTS = (100, 500, 1000, 2000)

#: The flatness window starts at this commit (or at a quarter of a shorter run) and ends at the last.
WINDOW_START = 500
#: Mode on is flat where hold p95, metadata.json and planning end within ±25 % of the window's start.
FLAT_TOLERANCE = 0.25

#: What the summary and the smoke test expect in every report.
REPORT_KEYS = ("ok", "errors", "kind", "maintenance", "settings", "machine", "code", "runs", "started_at", "wall_s")
RUN_KEYS = (
    "maintenance",
    "table",
    "commits",
    "files_per_commit",
    "batches_exact",
    "snapshots",
    "holds_s",
    "samples",
    "maintenance_block",
    "maintenance_steps",
    "summary",
)
SAMPLE_KEYS = (
    "commit",
    "metadata_json_bytes",
    "metadata_objects",
    "metadata_dir_bytes",
    "manifests",
    "data_files",
    "snapshots",
    "plan_ms",
    "plan_ms_runs",
)
#: The figures whose growth over the window the summary reports (``hold_s_p95`` over ``window`` commits).
WINDOW_FIGURES = ("hold_s_p95", "metadata_json_bytes", "data_files", "plan_ms")
STEPS = ("expire", "compact", "orphans", "properties")
OUTCOMES = ("done", "skipped", "failed")

#: Mode on of the smoke preset: every step gets its chance within a few commits.
SMOKE_MAINTENANCE_ON = {
    **MAINTENANCE_ON,
    "check_interval_s": 2,
    "min_snapshots_to_keep": 2,
    "max_snapshot_age_s": 1,
    "compact_min_files": 3,
    "metadata_previous_versions": 2,
}

PRESETS: dict[str, dict[str, Any]] = {
    "standard": {},
    # CI: the scenario end to end on a few commits; checks shape and sanity, not speed.
    "smoke": {
        "commits": 6,
        "files_per_commit": 2,
        "sample_every": 2,
        "window": 3,
        "maintenance_on": SMOKE_MAINTENANCE_ON,
    },
}


@dataclass
class HistoryScenario(Harness):
    commits: int = 3000
    files_per_commit: int = 5
    rows_per_file: int = 20
    sample_every: int = 10
    plan_repeats: int = 3
    window: int = 50  # commits whose holds give the p50/p95 at a checkpoint (ending at it)
    maintenance: tuple[str, ...] = MODES  # run one after the other, each on its own table
    maintenance_on: dict[str, Any] = field(default_factory=lambda: dict(MAINTENANCE_ON))
    batch_max_wait_s: float = 30.0
    commit_timeout_s: float = 300.0
    max_seconds: float | None = None  # per mode: stop starting new commits after this long
    upload_threads: int = 4
    out: Path = Path("load/results/history.json")
    chart: Path = Path("load/results/history.png")
    verify: bool = True

    def validate(self) -> None:
        if self.commits < 1 or self.files_per_commit < 1 or self.rows_per_file < 1:
            raise ValueError("--commits, --files-per-commit and --rows-per-file must be at least 1")
        if self.sample_every < 1 or self.plan_repeats < 1 or self.window < 1:
            raise ValueError("--sample-every, --plan-repeats and --window must be at least 1")
        unknown = [m for m in self.maintenance if m not in MODES]
        if unknown or not self.maintenance or len(set(self.maintenance)) != len(self.maintenance):
            raise ValueError(
                f"--maintenance {','.join(self.maintenance)}: distinct modes among {', '.join(MODES)}, comma-separated"
            )
        strange = sorted(set(self.maintenance_on) - set(MAINTENANCE_ON))
        if strange:
            raise ValueError(f"--maintenance-set {', '.join(strange)}: known keys {', '.join(MAINTENANCE_ON)}")
        self.check_worker_env()

    def worker_settings(self) -> dict[str, str]:
        """The worker environment that makes one commit per round of F files."""
        return {
            "ICEFEED_BATCH_MAX_FILES": str(self.files_per_commit),
            "ICEFEED_BATCH_MAX_WAIT_S": str(self.batch_max_wait_s),
            # Short long-polls: stopping the worker does not wait out a 20 s poll.
            "ICEFEED_SQS_WAIT_TIME_S": "2",
            **self.worker_env,
        }

    def maintenance_block(self, mode: str) -> dict[str, Any]:
        """The ``[maintenance]`` settings of a mode's routes file."""
        return dict(self.maintenance_on) if mode == "on" else dict(MAINTENANCE_OFF)


def maintenance_toml(block: dict[str, Any]) -> str:
    """``[maintenance]`` with the block's keys, as the routes file carries it."""
    lines = ["[maintenance]"]
    for key, value in block.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def table_name(mode: str) -> str:
    return f"events_{mode}"


def worker_knows_maintenance() -> bool:
    """Whether this checkout's worker accepts a routes file with a ``[maintenance]`` block."""
    route = ROUTE.format(
        name="probe", bucket="probe-landing", prefix="events/", db="probe", table="events", warehouse="probe-wh"
    )
    parse_routes(route)  # a valid route: only the block can make the next parse fail
    try:
        parse_routes(f"{route}\n{maintenance_toml(MAINTENANCE_OFF)}")
    except ConfigError:
        return False
    return True


def add_parser(sub: Any) -> None:
    p = sub.add_parser("history", help="one table, thousands of small commits: how commit cost and metadata grow")
    p.add_argument("--smoke", action="store_true", help="tiny preset for CI (6 commits of 2 files per mode)")
    p.add_argument("--commits", type=int, help="commits to make per mode (default 3000)")
    p.add_argument("--files-per-commit", type=int, help="files in every commit (default 5)")
    p.add_argument("--rows-per-file", type=int, help="JSON lines per file (default 20)")
    p.add_argument("--sample-every", type=int, help="measure the table every k-th commit (default 10)")
    p.add_argument("--plan-repeats", type=int, help="scan plannings timed per sample, median kept (default 3)")
    p.add_argument("--window", type=int, help="commits whose holds make a checkpoint's p50/p95 (default 50)")
    p.add_argument(
        "--maintenance",
        help=f"comma-separated modes, run one after the other, each on its own table (default {','.join(MODES)})",
    )
    p.add_argument(
        "--maintenance-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key of mode on's [maintenance] block, VALUE in TOML (repeatable)",
    )
    p.add_argument("--commit-timeout", type=float, help="upper bound of one round, seconds (default 300)")
    p.add_argument(
        "--max-seconds",
        type=float,
        help="per mode: start no new commit after this many seconds; report the commits made",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the final pyiceberg read of every row")
    add_harness_args(p, HistoryScenario.out, HistoryScenario.chart)


def scenario_from_args(args: argparse.Namespace) -> HistoryScenario:
    preset = "smoke" if args.smoke else "standard"
    sc = replace(HistoryScenario(preset=preset), **PRESETS[preset])
    simple = {
        "commits": "commits",
        "files_per_commit": "files_per_commit",
        "rows_per_file": "rows_per_file",
        "sample_every": "sample_every",
        "plan_repeats": "plan_repeats",
        "window": "window",
        "commit_timeout": "commit_timeout_s",
        "max_seconds": "max_seconds",
    }
    overrides = overrides_from_args(args, simple)
    if args.maintenance is not None:
        overrides["maintenance"] = tuple(m.strip() for m in args.maintenance.split(",") if m.strip())
    block = dict(sc.maintenance_on)
    for item in args.maintenance_set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--maintenance-set {item!r}: expected KEY=VALUE")
        try:
            block[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"--maintenance-set {item!r}: the value is not TOML ({error})") from None
    overrides["maintenance_on"] = block
    if args.no_verify:
        overrides["verify"] = False
    sc = replace(sc, **overrides)
    sc.validate()
    return sc


# -- measuring the table -----------------------------------------------------------------------


@dataclass
class TableProbe:
    """pyiceberg on the stack's moto: the figures of the table's current state."""

    moto_url: str
    identifier: str
    s3: Any
    plan_repeats: int = 3
    _catalog: Any = None

    def measure(self, commit: int) -> dict[str, Any]:
        if self._catalog is None:
            self._catalog = iceberg_catalog(self.moto_url)
        table = self._catalog.load_table(self.identifier)
        location = urlparse(table.metadata_location)
        head = self.s3.head_object(Bucket=location.netloc, Key=location.path.lstrip("/"))
        objects, dir_bytes = self._listing(location.netloc, location.path.lstrip("/").rsplit("/", 1)[0] + "/")
        snapshot = table.current_snapshot()
        manifests = snapshot.manifests(table.io) if snapshot is not None else []
        runs: list[float] = []
        data_files = 0
        for _ in range(self.plan_repeats):
            t = time.perf_counter()
            data_files = sum(1 for _ in table.scan().plan_files())
            runs.append((time.perf_counter() - t) * 1000)
        return {
            "commit": commit,
            "t": time.time(),
            "metadata_json_bytes": int(head["ContentLength"]),
            "metadata_objects": objects,
            "metadata_dir_bytes": dir_bytes,
            "manifests": len(manifests),
            "data_files": data_files,
            "snapshots": len(table.metadata.snapshots),
            "plan_ms": round(statistics.median(runs), 2),
            "plan_ms_runs": [round(x, 2) for x in runs],
        }

    def _listing(self, bucket: str, prefix: str) -> tuple[int, int]:
        count = size = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                count += 1
                size += int(obj["Size"])
        return count, size


# -- the run -------------------------------------------------------------------------------------


class RoundFailed(RuntimeError):
    pass


class History:
    def __init__(self, sc: HistoryScenario, say: Callable[[str], None]) -> None:
        self.sc = sc
        self.say = say
        # One landing bucket, queue, routes file and table per mode: no mode sees another's files.
        self.names = Names(uuid.uuid4().hex[:8], len(sc.maintenance))
        self.gen = Generator(sc.rows_per_file, 0.0, 0.0, sc.seed)
        self.errors: list[str] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, str | None] = {}  # the [maintenance] block of each mode's routes file
        self.fleet: Fleet | None = None
        self.interrupted = False  # SIGINT/SIGTERM: finish the round, report the commits made
        self.run_started = time.time()

    def run(self) -> dict[str, Any]:
        sc = self.sc
        own_workdir = sc.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="icefeed-history-")) if sc.workdir is None else sc.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.say(f"workdir {workdir}; starting the local stack (moto, Sail, PostgreSQL)")
        loadavg_start = os.getloadavg()
        stack = Stack(workdir / "stack").start()
        ledger: LedgerReader | None = None
        uploader: Uploader | None = None
        try:
            self.stack, self.workdir = stack, workdir
            self.stack_pids = stack_processes()
            ledger = LedgerReader(stack.pg_dsn, self.names.schema)
            uploader = Uploader(lambda: stack.client("s3"), self.gen, sc.upload_threads)
            self.ledger, self.uploader = ledger, uploader
            for mode, bucket in zip(sc.maintenance, self.names.landing, strict=True):
                if self.interrupted:
                    self.say(f"── maintenance {mode}: not run (interrupted)")
                    continue
                self.say(f"── maintenance {mode}: {sc.commits} commits of {sc.files_per_commit} files")
                try:
                    self.fleet = self._provision(mode, bucket, workdir)
                    self.runs[mode] = self.run_mode(mode, self.fleet)
                except Exception as exc:  # noqa: BLE001 - record, still report what was measured
                    self.errors.append(f"{mode}: {type(exc).__name__}: {exc}")
                    self.say(f"maintenance {mode} FAILED: {type(exc).__name__}: {exc}")
                    if self.fleet is not None:
                        self.fleet.kill_all()
            return self.assemble(loadavg_start)
        finally:
            tear_down(
                self.say,
                self.names.schema,
                sc.keep,
                stack,
                self.fleet,
                uploader,
                ledger,
                workdir if own_workdir else None,
            )

    def _provision(self, mode: str, bucket: str, workdir: Path) -> Fleet:
        """The mode's route (its bucket, its table) with its ``[maintenance]`` block, its queue, and
        the fleet that runs its worker (the ledger is migrated by the first)."""
        n = self.names
        route = ROUTE.format(
            name=f"history_{mode}",
            bucket=bucket,
            prefix=f"events/{mode}/",
            db=n.db,
            table=table_name(mode),
            warehouse=n.warehouse,
        )
        block: str | None = maintenance_toml(self.sc.maintenance_block(mode))
        if not worker_knows_maintenance():
            if mode != "off":
                raise RuntimeError(f"this worker does not know the routes' [maintenance] block: mode {mode} needs it")
            # A worker without table maintenance: "off" is what it does anyway.
            self.say("  this worker does not know the routes' [maintenance] block: mode off runs without one")
            block = None
        self.blocks[mode] = block
        text = route if block is None else f"{route}\n{block}"
        routes = parse_routes(text)  # the worker's own check: a value it refuses stops the mode here
        routes_file = workdir / f"routes-{mode}.toml"
        routes_file.write_text(text)
        prov = self.stack.provision(routes, queue_name=f"load-history-{n.tag}-{mode}", max_receive_count=5)
        sqs = self.stack.client("sqs")
        for _ in range(3):  # configuring notifications queued an s3:TestEvent: take it out
            messages = sqs.receive_message(QueueUrl=prov.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in messages.get("Messages", []):
                sqs.delete_message(QueueUrl=prov.queue_url, ReceiptHandle=m["ReceiptHandle"])
            if messages.get("Messages"):
                break
        fleet = Fleet(self.stack, prov.queue_url, routes_file, n.schema, workdir, self.sc.worker_settings())
        if self.fleet is None:
            fleet.migrate()
        return fleet

    def run_mode(self, mode: str, fleet: Fleet) -> dict[str, Any]:
        sc = self.sc
        identifier = f"{self.names.db}.{table_name(mode)}"
        probe = TableProbe(self.stack.moto_url, identifier, self.stack.client("s3"), sc.plan_repeats)
        worker = fleet.start(f"history-{mode}")
        fleet.wait_started([worker])
        staged: list[StagedFile] = []
        rounds_s: list[float] = []
        samples: list[dict[str, Any]] = []
        started = time.time()
        last_note = time.monotonic()
        done = 0
        settle_s: float | None = None
        try:
            for n in range(1, sc.commits + 1):
                if self.interrupted:
                    self.say(f"  interrupted after {done} commits: stopping there")
                    if done and samples[-1]["commit"] != done:
                        samples.append(probe.measure(done))
                    break
                rounds_s.append(self._round(mode, n, fleet, worker, staged))
                done = n
                out_of_time = sc.max_seconds is not None and time.time() - started >= sc.max_seconds
                if n == 1 or n % sc.sample_every == 0 or n == sc.commits or out_of_time:
                    samples.append(probe.measure(n))
                if out_of_time:
                    self.say(f"  --max-seconds {sc.max_seconds:.0f} reached after {n} commits: stopping there")
                    break
                if time.monotonic() - last_note >= 30 or n == sc.commits:
                    last_note = time.monotonic()
                    s = samples[-1]
                    self.say(
                        f"  commit {n}/{sc.commits} ({n / (time.time() - started):.2f} commits/s): last sample at "
                        f"{s['commit']}: metadata.json {s['metadata_json_bytes']:,} B, {s['manifests']} manifests, "
                        f"{s['data_files']} data files, {s['snapshots']} snapshots, plan {s['plan_ms']} ms"
                    )
            block = sc.maintenance_block(mode)
            if done and not self.interrupted and self.blocks[mode] is not None and block.get("enabled"):
                settle_s = self._await_check(mode, fleet, worker, float(block["check_interval_s"]))
        finally:
            fleet.stop([worker], timeout_s=90)
        return self._result(mode, worker, staged, rounds_s, samples, done, started, settle_s)

    def _round(self, mode: str, n: int, fleet: Fleet, worker: WorkerProc, staged: list[StagedFile]) -> float:
        """Upload F files, wait until the ledger shows all F final; the round's seconds."""
        sc = self.sc
        prefix = f"events/{mode}/c{n:06d}/"
        bucket = self.names.landing[sc.maintenance.index(mode)]
        files = [self.gen.make(mode, bucket, prefix) for _ in range(sc.files_per_commit)]
        t0 = time.time()
        self.uploader.backlog(files, sc.commit_timeout_s, lambda _m: None)
        staged.extend(files)
        deadline = time.monotonic() + sc.commit_timeout_s
        while time.monotonic() < deadline:
            _total, final = self.ledger.progress(prefix)
            if final >= len(files):
                return time.time() - t0
            fleet.alive([worker])
            self._stack_alive()
            time.sleep(0.02)
        raise RoundFailed(f"commit {n}: its {len(files)} files were not final within {sc.commit_timeout_s:.0f} s")

    def _await_check(self, mode: str, fleet: Fleet, worker: WorkerProc, check_interval_s: float) -> float | None:
        """After the last commit, until the worker logs a maintenance step that follows it (its
        next check), so that every run records maintenance at work on the whole history: the
        seconds waited, None (and an error) if none came within three check intervals + 60 s."""
        t0 = time.monotonic()
        limit_s = 3 * check_interval_s + 60
        offset = 0
        stepped = False
        while time.monotonic() - t0 < limit_s:
            lines, offset = events_from(worker.log_path, offset)
            for e in lines:
                if e.get("event") == "batch_committed":
                    stepped = False
                elif e.get("event") == "maintenance_step":
                    stepped = True
            if stepped:
                return rnd(time.monotonic() - t0, 2)
            fleet.alive([worker])
            self._stack_alive()
            time.sleep(0.2)
        self.errors.append(
            f"{mode}: no maintenance_step logged within {limit_s:.0f} s after the last commit "
            f"(check_interval_s {check_interval_s:g})"
        )
        return None

    def _stack_alive(self) -> None:
        dead = dead_server(self.stack_pids, self.workdir / "stack")
        if dead:
            raise RoundFailed(dead)

    def _result(
        self,
        mode: str,
        worker: WorkerProc,
        staged: list[StagedFile],
        rounds_s: list[float],
        samples: list[dict[str, Any]],
        done: int,
        started: float,
        settle_s: float | None,
    ) -> dict[str, Any]:
        sc = self.sc
        identifier = f"{self.names.db}.{table_name(mode)}"
        holds = [float(c["held_s"]) for c in worker.commits]
        batches = self.ledger.batches(f"events/{mode}/")
        committed = [b for b in batches if b["status"] == "COMMITTED"]
        exact = sum(1 for b in committed if b["files"] == sc.files_per_commit)
        batch_s = [b["finished_at"] - b["created_at"] for b in committed if b["finished_at"]]
        steps = [step_record(e) for e in worker.maintenance]
        result: dict[str, Any] = {
            "maintenance": mode,
            "table": identifier,
            "commits": done,
            "files_per_commit": sc.files_per_commit,
            "files": len(staged),
            "seconds": rnd(time.time() - started, 1),
            "batches_committed": len(committed),
            "batches_other": len(batches) - len(committed),
            "batches_exact": exact,
            "holds_s": [rnd(h, 4) for h in holds],
            "batch_s": [rnd(s, 4) for s in batch_s],
            "round_s": [rnd(s, 4) for s in rounds_s],
            "samples": samples,
            "maintenance_block": sc.maintenance_block(mode) if self.blocks.get(mode) is not None else None,
            "maintenance_steps": steps,
            "maintenance_stats": maintenance_stats(steps),
            "settle_s": settle_s,
            "worker_exit_code": worker.exit_code,
            "interrupted": self.interrupted,
        }
        if sc.verify and staged:
            self.say("  verifying every row with pyiceberg")
            view = read_table(self.stack.moto_url, identifier)
            correctness = check(staged, view, self.ledger.files(f"events/{mode}/"))
            result["snapshots"] = len(view.snapshots)
            result["append_snapshots"] = sum(1 for s in view.snapshots if s["operation"] == "append")
            result["correctness"] = {k: v for k, v in correctness.items() if k != "examples"}
            if correctness["lost_files"] or correctness["duplicated_rows"] or correctness["ledger_mismatches"]:
                self.errors.append(f"{mode}: the table disagrees with what was staged: {correctness}")
        else:
            result["snapshots"] = samples[-1]["snapshots"] if samples else 0
        if exact != done or len(committed) != done:  # a round split in two: noted, the figures stand
            self.say(
                f"  note: {len(committed)} committed batches, {exact} of exactly {sc.files_per_commit} files, "
                f"for {done} rounds"
            )
        if any(by.get("failed") for by in result["maintenance_stats"]["counts"].values()):
            self.errors.append(f"{mode}: maintenance steps failed: {result['maintenance_stats']['errors']}")
        result["summary"] = summarize_run(result, sc.window)
        return result

    def assemble(self, loadavg_start: tuple[float, ...]) -> dict[str, Any]:
        sc = self.sc
        return {
            "kind": "history",
            "ok": not self.errors and bool(self.runs),
            "errors": self.errors,
            "maintenance": list(sc.maintenance),
            "interrupted": self.interrupted,
            "settings": {
                "scenario": sc.as_dict(),
                "worker_env": self.fleet.settings_env() if self.fleet is not None else sc.worker_settings(),
                "maintenance_blocks": self.blocks,
                "tables": {mode: f"{self.names.db}.{table_name(mode)}" for mode in sc.maintenance},
                "one_commit_per_round": "worker ICEFEED_BATCH_MAX_FILES=F with a long ICEFEED_BATCH_MAX_WAIT_S; "
                "each round uploads F files and waits until the ledger shows them final",
                "commit_hold": "held_s of the worker's batch_committed log line (table lock held: append + finalize)",
                "maintenance_hold": "held_s of the worker's maintenance_step log lines: the table lock held by a "
                "step, the longest an append waited for it; max and p95 over the steps that took the lock",
                "planning": f"pyiceberg table.scan().plan_files(), median of {sc.plan_repeats}",
                "window": f"from the first sample at or after commit {WINDOW_START} (a quarter of the run when it "
                f"is shorter than {4 * WINDOW_START} commits) to the last; hold p95 over the {sc.window} commits "
                "ending at each end",
                "flat": f"maintenance on: hold p95, metadata.json and planning end within ±{FLAT_TOLERANCE:.0%} of "
                "the window's start; data files never exceed compact_min_files + what two check intervals "
                "can add at the window's commit rate (at most F per commit)",
            },
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg_start": [round(x, 2) for x in loadavg_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "pg_embedded": self.stack.pg_embedded,
                "stack": "moto, Sail and PostgreSQL on the same machine",
            },
            "code": code_state(),
            "started_at": self.run_started,
            "wall_s": rnd(time.time() - self.run_started, 1),
            "runs": self.runs,
        }


# -- figures -------------------------------------------------------------------------------------

STEP_FIELDS = (
    "table",
    "step",
    "outcome",
    "held_s",
    "lock_wait_s",
    "expired",
    "files_in",
    "files_out",
    "deleted",
    "error",
    "after_commit",
    "timestamp",
)


def step_record(line: dict[str, Any]) -> dict[str, Any]:
    """A worker's ``maintenance_step`` log line, kept to its fields."""
    return {k: line[k] for k in STEP_FIELDS if k in line}


def _amount(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float):
        return int(value)
    return len(value) if isinstance(value, list | tuple | dict) else 0


def maintenance_stats(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The steps by step and outcome, the longest lock hold of a step (the longest an append waited
    for maintenance) and the p95 over the steps that took the lock, and what the steps did."""
    seen = Counter((str(s.get("step")), str(s.get("outcome"))) for s in steps)
    order = {name: i for i, name in enumerate(STEPS + OUTCOMES)}
    counts: dict[str, dict[str, int]] = {}
    for (step, outcome), n in sorted(seen.items(), key=lambda kv: tuple((order.get(x, 99), x) for x in kv[0])):
        counts.setdefault(step, {})[outcome] = n
    held = [float(s["held_s"]) for s in steps if float(s.get("held_s") or 0) > 0]
    waits = [float(s.get("lock_wait_s") or 0) for s in steps]
    return {
        "steps": len(steps),
        "counts": counts,
        "held_steps": len(held),
        "held_s_max": rnd(max(held), 4) if held else 0.0,
        "held_s_p95": rnd(percentile(held, 95), 4) if held else 0.0,
        "lock_wait_s_max": rnd(max(waits), 4) if waits else 0.0,
        **{key: sum(_amount(s.get(key)) for s in steps) for key in ("expired", "files_in", "files_out", "deleted")},
        "errors": [f"{s.get('step')}: {s.get('error')}" for s in steps if s.get("outcome") == "failed"][:5],
    }


def summarize_run(run: dict[str, Any], window: int) -> dict[str, Any]:
    return {
        "checkpoints": checkpoints(run, window),
        "window": flatness(run, window),
        "maintenance": run["maintenance_stats"],
    }


def checkpoints(run: dict[str, Any], window: int) -> list[dict[str, Any]]:
    """The figures at commits 100, 500, 1000, 2000 (those reached) and the last: hold p50/p95
    over the ``window`` commits ending there, and the last sample at or before it."""
    holds: list[float] = run["holds_s"]
    samples: list[dict[str, Any]] = run["samples"]
    last = run["commits"]
    points = sorted({c for c in CHECKPOINTS if c < last} | ({last} if last else set()))
    out = []
    for c in points:
        span = holds[max(0, c - window) : c]
        before = [s for s in samples if s["commit"] <= c]
        s = before[-1] if before else {}
        out.append(
            {
                "commit": c,
                "hold_window": [max(1, c - window + 1), c],
                "hold_s_p50": rnd(percentile(span, 50)),
                "hold_s_p95": rnd(percentile(span, 95)),
                "sample_commit": s.get("commit"),
                "metadata_json_bytes": s.get("metadata_json_bytes"),
                "manifests": s.get("manifests"),
                "data_files": s.get("data_files"),
                "snapshots": s.get("snapshots"),
                "plan_ms": s.get("plan_ms"),
            }
        )
    return out


def flatness(run: dict[str, Any], window: int) -> dict[str, Any]:
    """From the first sample at or after commit 500 (a quarter of a run shorter than 2000 commits,
    so that the window is always at least three quarters of the run) to the last sample: each
    figure at both ends and last/first. With maintenance on, ``flat`` per figure: hold p95,
    metadata.json and planning within ±25 % of the start; data files at most ``data_files_bound``."""
    samples: list[dict[str, Any]] = run["samples"]
    if not samples:
        return {}
    holds: list[float] = run["holds_s"]
    last = samples[-1]
    first = next(s for s in samples if s["commit"] >= min(WINDOW_START, last["commit"] / 4))

    def at(sample: dict[str, Any], key: str) -> float | None:
        if key == "hold_s_p95":
            c = sample["commit"]
            return rnd(percentile(holds[max(0, c - window) : c], 95), 4)
        return sample.get(key)

    figures: dict[str, dict[str, Any]] = {}
    for key in WINDOW_FIGURES:
        a, b = at(first, key), at(last, key)
        figures[key] = {"first": a, "last": b, "ratio": ratio(b, a)}
    out: dict[str, Any] = {"from_commit": first["commit"], "to_commit": last["commit"], "figures": figures}
    block = run.get("maintenance_block") or {}
    if not block.get("enabled"):
        out["flat"] = None
        return out
    inside = [s for s in samples if s["commit"] >= first["commit"]]
    peak = max(s["data_files"] for s in inside)
    bound = data_files_bound(block, run, first, last)
    figures["data_files"].update({"max": peak, "bound": bound})
    flat = {
        key: figures[key]["ratio"] is not None and abs(figures[key]["ratio"] - 1) <= FLAT_TOLERANCE
        for key in ("hold_s_p95", "metadata_json_bytes", "plan_ms")
    }
    flat["data_files"] = peak <= bound
    flat["all"] = all(flat.values())
    out["flat"] = flat
    return out


def data_files_bound(block: dict[str, Any], run: dict[str, Any], first: dict[str, Any], last: dict[str, Any]) -> int:
    """The most live data files compaction allows: at every check fewer than ``compact_min_files``
    small files are left; until the next check, commits add at most F data files each. Two check
    intervals, not one: a check that cannot take the lock within ``max_lock_wait_s`` compacts at
    the next. The commit rate is the window's (the run's when the window is one sample). The
    harness's files are tiny, so compaction's outputs are small files too and count here."""
    commits, seconds = last["commit"] - first["commit"], last["t"] - first["t"]
    if commits <= 0 or seconds <= 0:
        commits, seconds = run["commits"], run["seconds"] or 0
    rate = commits / seconds if seconds else 0.0
    between = math.ceil(2 * float(block["check_interval_s"]) * rate)
    return int(block["compact_min_files"]) + between * int(run["files_per_commit"])


def summary(report: dict[str, Any]) -> str:
    sc = report["settings"]["scenario"]
    m = report["machine"]
    lines = [
        "",
        f"icefeed history — preset {sc['preset']}: {sc['commits']} commits × {sc['files_per_commit']} files "
        f"× {sc['rows_per_file']} rows per mode, sampled every {sc['sample_every']} commits; "
        f"maintenance {', '.join(report['maintenance'])}",
        f"machine: {m['cpu_count']} CPUs, python {m['python']}, load average {m['loadavg_start'][0]} → "
        f"{m['loadavg_end'][0]}; code {report['code'].get('git_head', '?')[:12]}; wall {report['wall_s']} s",
    ]
    for mode in report["maintenance"]:
        run = report["runs"].get(mode)
        if run is None:
            lines += ["", f"maintenance {mode}: not measured"]
            continue
        lines += [
            "",
            f"maintenance {mode} ({run['table']}): {run['commits']} commits, {run['batches_exact']} batches of "
            f"exactly {run['files_per_commit']} files, {run['snapshots']} snapshots",
            f"{'commit':>7}{'hold p50 s':>12}{'hold p95 s':>12}{'metadata.json B':>17}{'manifests':>11}"
            f"{'data files':>12}{'snapshots':>11}{'plan ms':>10}",
        ]
        for row in run["summary"]["checkpoints"]:
            lines.append(
                f"{row['commit']:>7}{_f(row['hold_s_p50']):>12}{_f(row['hold_s_p95']):>12}"
                f"{_f(row['metadata_json_bytes']):>17}{_f(row['manifests']):>11}{_f(row['data_files']):>12}"
                f"{_f(row['snapshots']):>11}{_f(row['plan_ms']):>10}"
            )
        lines += _window_lines(run["summary"]["window"])
        lines += _maintenance_lines(run["summary"]["maintenance"], run["maintenance_block"] is not None)
        c = run.get("correctness")
        if c:
            lines.append(
                f"correctness (pyiceberg vs staged): {c['staged_files']} files, {c['table_rows']} rows; lost_files "
                f"{c['lost_files']}, duplicated_rows {c['duplicated_rows']}, ledger_mismatches {c['ledger_mismatches']}"
            )
    for error in report["errors"]:
        lines.append(f"ERROR: {error}")
    lines.append("RESULT: " + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines)


def _window_lines(w: dict[str, Any]) -> list[str]:
    if not w:
        return []
    flat = w["flat"]
    names = {
        "hold_s_p95": "hold p95 s",
        "metadata_json_bytes": "metadata.json B",
        "data_files": "data files",
        "plan_ms": "plan ms",
    }
    parts = []
    for key, label in names.items():
        fig = w["figures"][key]
        text = f"{label} {_f(fig['first'])} → {_f(fig['last'])} (×{_f(fig['ratio'])})"
        if "bound" in fig:
            text += f", max {fig['max']:,} vs bound {fig['bound']:,}"
        if flat is not None:
            text += " flat" if flat[key] else " NOT flat"
        parts.append(text)
    verdict = "" if flat is None else ("; flat" if flat["all"] else "; NOT flat")
    return [f"commits {w['from_commit']} → {w['to_commit']}{verdict}: " + "; ".join(parts)]


def _maintenance_lines(stats: dict[str, Any], has_block: bool) -> list[str]:
    if not stats["steps"]:
        return ["maintenance steps: none logged" + ("" if has_block else " (the routes had no [maintenance] block)")]
    counts = ", ".join(
        f"{step} " + "/".join(f"{n} {outcome}" for outcome, n in by.items()) for step, by in stats["counts"].items()
    )
    return [
        f"maintenance steps: {counts}; the lock held at most {_f(stats['held_s_max'])} s, p95 "
        f"{_f(stats['held_s_p95'])} s over {stats['held_steps']} steps that took it; expired {stats['expired']}, "
        f"files {stats['files_in']} → {stats['files_out']}, orphans deleted {stats['deleted']}"
    ]


def _f(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def chart(report: dict[str, Any], path: Path) -> None:
    """One panel per figure against the commit number; one line per maintenance mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [
        ("metadata_json_bytes", "current metadata.json (KB)", 1 / 1024),
        ("manifests", "manifests in the current snapshot", 1),
        ("data_files", "live data files", 1),
        ("snapshots", "snapshots", 1),
        ("plan_ms", "pyiceberg plan_files() (ms, median)", 1),
    ]
    ax = axes[0][0]
    w = max(1, report["settings"]["scenario"]["window"])
    for mode, run in report["runs"].items():
        holds = run["holds_s"]
        xs = list(range(1, len(holds) + 1))
        ax.plot(xs, holds, ",", alpha=0.35, label=f"maintenance {mode}: each commit")
        p50 = [percentile(holds[max(0, i - w) : i], 50) for i in xs]
        p95 = [percentile(holds[max(0, i - w) : i], 95) for i in xs]
        ax.plot(xs, p50, linewidth=1.2, label=f"{mode}: p50 over {w} commits")
        ax.plot(xs, p95, linewidth=1.2, label=f"{mode}: p95 over {w} commits")
        held = [s for s in run.get("maintenance_steps", []) if float(s.get("held_s") or 0) > 0]
        if held:
            ax.plot(
                [s.get("after_commit", 0) for s in held],
                [float(s["held_s"]) for s in held],
                "x",
                markersize=4,
                label=f"{mode}: a maintenance step held the lock",
            )
    ax.set_title("table lock hold, s (commits: append + finalize)")
    for (key, title, scale), ax in zip(panels, [a for row in axes for a in row][1:], strict=True):
        for mode, run in report["runs"].items():
            xs = [s["commit"] for s in run["samples"]]
            ax.plot(xs, [s[key] * scale for s in run["samples"]], marker=".", markersize=3, label=f"maintenance {mode}")
        ax.set_title(title)
    for ax in [a for row in axes for a in row]:
        ax.set_xlabel("commit")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    sc = report["settings"]["scenario"]
    fig.suptitle(
        f"icefeed long history — {max((r['commits'] for r in report['runs'].values()), default=0)} commits "
        f"× {sc['files_per_commit']} files, one table per mode; "
        f"{report['machine']['cpu_count']} CPUs, moto/Sail/PostgreSQL on the same machine; "
        f"code {report['code'].get('git_head', '?')[:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def headline(sc: HistoryScenario) -> str:
    return (
        f"icefeed load history, preset {sc.preset}: {sc.commits} commits of {sc.files_per_commit} files per mode, "
        f"sampled every {sc.sample_every}, maintenance {','.join(sc.maintenance)}"
    )


def execute(sc: HistoryScenario, say: Callable[[str], None]) -> dict[str, Any]:
    """The run; SIGINT/SIGTERM finish the current round and report the commits made."""
    history = History(sc, say)

    def stop(_sig: int, _frame: Any) -> None:
        history.interrupted = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return history.run()


def exit_status(report: dict[str, Any]) -> int:
    """0 all good, 1 a mode failed or the table or the ledger disagrees (rows lost or duplicated, a
    maintenance step failed), 2 the run itself failed (nothing measured)."""
    if not report["runs"]:
        return 2
    return 0 if report["ok"] else 1
