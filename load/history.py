"""``python -m load history`` — the long-history scenario (issue 14, "measure first").

One table receives ``commits`` small commits of exactly ``files_per_commit`` files each, from one
real ``python -m worker run`` process on a local stack (moto + Sail + PostgreSQL, started here).

How one commit is made exactly F files (round by round, never a race):

- the worker runs with ``ICEFEED_BATCH_MAX_FILES=F`` and a long ``ICEFEED_BATCH_MAX_WAIT_S``
  (30 s): a batch closes when it holds F files, not on a timer;
- each round uploads F new files at once, then waits until the ledger shows all F final; only
  then does the next round upload. The batch of a round is therefore full (F files) as soon as
  its F notifications arrive, and no file of the next round can join it.

The ledger's batches are checked at the end (``batches_exact`` = batches of exactly F files) and
the table's append snapshots are counted: one snapshot per commit.

Recorded per commit: the table lock's hold (``held_s`` of the worker's ``batch_committed`` log
line: append + ledger finalize, the time other commits to the table wait) and the round time
(first PUT → last file final). Every ``sample_every``-th commit (and the first and the last),
pyiceberg on the same moto records: the size of the current ``metadata.json`` (HEAD of
``table.metadata_location``), the objects and bytes under the table's ``metadata/`` prefix,
the manifests and live data files of the current snapshot, the snapshot count, and the wall
time of ``table.scan().plan_files()`` (median of ``plan_repeats``; the table is loaded once per
sample, so the manifest list is read once and each manifest on every repeat).

The report (JSON) keeps one curve per maintenance mode under ``runs``; only ``off`` exists
today. A later ``--maintenance`` adds a mode: a new entry of ``MODES`` with a ``maintain`` step
run between rounds, then its curve lands next to ``off`` in the same report and plot."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from load.bench import ROUTE, Names, code_state, percentile, rnd, tear_down
from load.config import Harness, add_harness_args, overrides_from_args
from load.data import Generator, StagedFile, Uploader
from load.fleet import Fleet, WorkerProc
from load.ledger import LedgerReader
from load.monitor import dead_server, stack_processes
from load.verify import check, read_table
from worker.localstack import Stack, iceberg_catalog
from worker.routes import parse_routes

#: Maintenance modes the scenario knows. A mode is a curve in the report and in the plot.
MODES = ("off",)

#: Commits at which the summary reports the figures (plus the last commit).
CHECKPOINTS = (100, 500, 1000, 2000)

#: What the summary and the smoke test expect in every report.
REPORT_KEYS = ("ok", "errors", "kind", "maintenance", "settings", "machine", "code", "runs", "started_at", "wall_s")
RUN_KEYS = ("maintenance", "commits", "files_per_commit", "batches_exact", "snapshots", "holds_s", "samples", "summary")
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

PRESETS: dict[str, dict[str, Any]] = {
    "standard": {},
    # CI: the scenario end to end on a few commits; checks shape and sanity, not speed.
    "smoke": {"commits": 6, "files_per_commit": 2, "sample_every": 2, "window": 3},
}


@dataclass
class HistoryScenario(Harness):
    commits: int = 3000
    files_per_commit: int = 5
    rows_per_file: int = 20
    sample_every: int = 10
    plan_repeats: int = 3
    window: int = 50  # commits whose holds give the p50/p95 at a checkpoint (ending at it)
    maintenance: str = "off"
    batch_max_wait_s: float = 30.0
    commit_timeout_s: float = 300.0
    max_seconds: float | None = None  # stop starting new commits after this long (report what was made)
    upload_threads: int = 4
    out: Path = Path("load/results/history.json")
    chart: Path = Path("load/results/history.png")
    verify: bool = True

    def validate(self) -> None:
        if self.commits < 1 or self.files_per_commit < 1 or self.rows_per_file < 1:
            raise ValueError("--commits, --files-per-commit and --rows-per-file must be at least 1")
        if self.sample_every < 1 or self.plan_repeats < 1 or self.window < 1:
            raise ValueError("--sample-every, --plan-repeats and --window must be at least 1")
        if self.maintenance not in MODES:
            raise ValueError(f"--maintenance {self.maintenance}: known modes {', '.join(MODES)}")
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


def add_parser(sub: Any) -> None:
    p = sub.add_parser("history", help="one table, thousands of small commits: how commit cost and metadata grow")
    p.add_argument("--smoke", action="store_true", help="tiny preset for CI (6 commits of 2 files, sample every 2)")
    p.add_argument("--commits", type=int, help="commits to make (default 3000)")
    p.add_argument("--files-per-commit", type=int, help="files in every commit (default 5)")
    p.add_argument("--rows-per-file", type=int, help="JSON lines per file (default 20)")
    p.add_argument("--sample-every", type=int, help="measure the table every k-th commit (default 10)")
    p.add_argument("--plan-repeats", type=int, help="scan plannings timed per sample, median kept (default 3)")
    p.add_argument("--window", type=int, help="commits whose holds make a checkpoint's p50/p95 (default 50)")
    p.add_argument("--maintenance", choices=list(MODES), help="table maintenance during the run (default off)")
    p.add_argument("--commit-timeout", type=float, help="upper bound of one round, seconds (default 300)")
    p.add_argument(
        "--max-seconds", type=float, help="start no new commit after this many seconds; report the commits made"
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
        "maintenance": "maintenance",
        "commit_timeout": "commit_timeout_s",
        "max_seconds": "max_seconds",
    }
    overrides = overrides_from_args(args, simple)
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
        self.names = Names(uuid.uuid4().hex[:8], 1)
        self.gen = Generator(sc.rows_per_file, 0.0, 0.0, sc.seed)
        self.errors: list[str] = []
        self.runs: dict[str, dict[str, Any]] = {}
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
        fleet: Fleet | None = None
        uploader: Uploader | None = None
        try:
            self.stack, self.workdir = stack, workdir
            self.stack_pids = stack_processes()
            queue = self._provision(workdir)
            fleet = Fleet(stack, queue, self.routes_file, self.names.schema, workdir, sc.worker_settings())
            fleet.migrate()
            ledger = LedgerReader(stack.pg_dsn, self.names.schema)
            uploader = Uploader(lambda: stack.client("s3"), self.gen, sc.upload_threads)
            self.fleet, self.ledger, self.uploader = fleet, ledger, uploader
            for mode in (sc.maintenance,):
                self.say(f"── maintenance {mode}: {sc.commits} commits of {sc.files_per_commit} files")
                try:
                    self.runs[mode] = self.run_mode(mode)
                except Exception as exc:  # noqa: BLE001 - record, still report what was measured
                    self.errors.append(f"{mode}: {type(exc).__name__}: {exc}")
                    self.say(f"maintenance {mode} FAILED: {type(exc).__name__}: {exc}")
                    fleet.kill_all()
            return self.assemble(loadavg_start, fleet)
        finally:
            tear_down(
                self.say, self.names.schema, sc.keep, stack, fleet, uploader, ledger, workdir if own_workdir else None
            )

    def _provision(self, workdir: Path) -> str:
        n = self.names
        text = ROUTE.format(
            name="history", bucket=n.landing[0], prefix="events/", db=n.db, table="events", warehouse=n.warehouse
        )
        self.routes_file = workdir / "routes.toml"
        self.routes_file.write_text(text)
        prov = self.stack.provision(parse_routes(text), queue_name=f"load-history-{n.tag}", max_receive_count=5)
        sqs = self.stack.client("sqs")
        for _ in range(3):  # configuring notifications queued an s3:TestEvent: take it out
            messages = sqs.receive_message(QueueUrl=prov.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in messages.get("Messages", []):
                sqs.delete_message(QueueUrl=prov.queue_url, ReceiptHandle=m["ReceiptHandle"])
            if messages.get("Messages"):
                break
        return prov.queue_url

    def run_mode(self, mode: str) -> dict[str, Any]:
        sc = self.sc
        table = f"{self.names.db}.events"
        probe = TableProbe(self.stack.moto_url, table, self.stack.client("s3"), sc.plan_repeats)
        worker = self.fleet.start(f"history-{mode}")
        self.fleet.wait_started([worker])
        staged: list[StagedFile] = []
        rounds_s: list[float] = []
        samples: list[dict[str, Any]] = []
        started = time.time()
        last_note = time.monotonic()
        done = 0
        try:
            for n in range(1, sc.commits + 1):
                if self.interrupted:
                    self.say(f"  interrupted after {done} commits: stopping there")
                    if done and samples[-1]["commit"] != done:
                        samples.append(probe.measure(done))
                    break
                rounds_s.append(self._round(mode, n, worker, staged))
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
        finally:
            self.fleet.stop([worker], timeout_s=90)
        return self._result(mode, worker, staged, rounds_s, samples, done, started)

    def _round(self, mode: str, n: int, worker: WorkerProc, staged: list[StagedFile]) -> float:
        """Upload F files, wait until the ledger shows all F final; the round's seconds."""
        sc = self.sc
        prefix = f"events/{mode}/c{n:06d}/"
        files = [self.gen.make(mode, self.names.landing[0], prefix) for _ in range(sc.files_per_commit)]
        t0 = time.time()
        self.uploader.backlog(files, sc.commit_timeout_s, lambda _m: None)
        staged.extend(files)
        deadline = time.monotonic() + sc.commit_timeout_s
        while time.monotonic() < deadline:
            _total, final = self.ledger.progress(prefix)
            if final >= len(files):
                return time.time() - t0
            self.fleet.alive([worker])
            self._stack_alive()
            time.sleep(0.02)
        raise RoundFailed(f"commit {n}: its {len(files)} files were not final within {sc.commit_timeout_s:.0f} s")

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
    ) -> dict[str, Any]:
        sc = self.sc
        holds = [float(c["held_s"]) for c in worker.commits]
        batches = self.ledger.batches(f"events/{mode}/")
        committed = [b for b in batches if b["status"] == "COMMITTED"]
        exact = sum(1 for b in committed if b["files"] == sc.files_per_commit)
        batch_s = [b["finished_at"] - b["created_at"] for b in committed if b["finished_at"]]
        result: dict[str, Any] = {
            "maintenance": mode,
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
            "worker_exit_code": worker.exit_code,
            "interrupted": self.interrupted,
        }
        if sc.verify and staged:
            self.say("  verifying every row with pyiceberg")
            view = read_table(self.stack.moto_url, f"{self.names.db}.events")
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
        result["summary"] = summarize_run(result, sc.window)
        return result

    def assemble(self, loadavg_start: tuple[float, ...], fleet: Fleet) -> dict[str, Any]:
        return {
            "kind": "history",
            "ok": not self.errors and bool(self.runs),
            "errors": self.errors,
            "maintenance": self.sc.maintenance,
            "settings": {
                "scenario": self.sc.as_dict(),
                "worker_env": fleet.settings_env(),
                "one_commit_per_round": "worker ICEFEED_BATCH_MAX_FILES=F with a long ICEFEED_BATCH_MAX_WAIT_S; "
                "each round uploads F files and waits until the ledger shows them final",
                "commit_hold": "held_s of the worker's batch_committed log line (table lock held: append + finalize)",
                "planning": f"pyiceberg table.scan().plan_files(), median of {self.sc.plan_repeats}",
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


def summarize_run(run: dict[str, Any], window: int) -> list[dict[str, Any]]:
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


def summary(report: dict[str, Any]) -> str:
    sc = report["settings"]["scenario"]
    m = report["machine"]
    lines = [
        "",
        f"icefeed history — preset {sc['preset']}: {sc['commits']} commits × {sc['files_per_commit']} files "
        f"× {sc['rows_per_file']} rows, sampled every {sc['sample_every']} commits",
        f"machine: {m['cpu_count']} CPUs, python {m['python']}, load average {m['loadavg_start'][0]} → "
        f"{m['loadavg_end'][0]}; code {report['code'].get('git_head', '?')[:12]}; wall {report['wall_s']} s",
    ]
    for mode, run in report["runs"].items():
        lines += [
            "",
            f"maintenance {mode}: {run['commits']} commits, {run['batches_exact']} batches of exactly "
            f"{run['files_per_commit']} files, {run['snapshots']} snapshots",
            f"{'commit':>7}{'hold p50 s':>12}{'hold p95 s':>12}{'metadata.json B':>17}{'manifests':>11}"
            f"{'data files':>12}{'snapshots':>11}{'plan ms':>10}",
        ]
        for row in run["summary"]:
            lines.append(
                f"{row['commit']:>7}{_f(row['hold_s_p50']):>12}{_f(row['hold_s_p95']):>12}"
                f"{_f(row['metadata_json_bytes']):>17}{_f(row['manifests']):>11}{_f(row['data_files']):>12}"
                f"{_f(row['snapshots']):>11}{_f(row['plan_ms']):>10}"
            )
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
    for mode, run in report["runs"].items():
        holds = run["holds_s"]
        xs = list(range(1, len(holds) + 1))
        ax.plot(xs, holds, ",", alpha=0.35, label=f"maintenance {mode}: each commit")
        w = max(1, report["settings"]["scenario"]["window"])
        p50 = [percentile(holds[max(0, i - w) : i], 50) for i in xs]
        p95 = [percentile(holds[max(0, i - w) : i], 95) for i in xs]
        ax.plot(xs, p50, linewidth=1.2, label=f"{mode}: p50 over {w} commits")
        ax.plot(xs, p95, linewidth=1.2, label=f"{mode}: p95 over {w} commits")
    ax.set_title("commit hold (table lock: append + finalize), s")
    ax.set_xlabel("commit")
    ax.legend(fontsize=7)
    for (key, title, scale), ax in zip(panels, [a for row in axes for a in row][1:], strict=True):
        for mode, run in report["runs"].items():
            xs = [s["commit"] for s in run["samples"]]
            ax.plot(xs, [s[key] * scale for s in run["samples"]], marker=".", markersize=3, label=f"maintenance {mode}")
        ax.set_title(title)
        ax.set_xlabel("commit")
        ax.legend(fontsize=7)
    sc = report["settings"]["scenario"]
    fig.suptitle(
        f"icefeed long history — {max((r['commits'] for r in report['runs'].values()), default=0)} commits "
        f"× {sc['files_per_commit']} files, one table; "
        f"{report['machine']['cpu_count']} CPUs, moto/Sail/PostgreSQL on the same machine; "
        f"code {report['code'].get('git_head', '?')[:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def headline(sc: HistoryScenario) -> str:
    return (
        f"icefeed load history, preset {sc.preset}: {sc.commits} commits of {sc.files_per_commit} files, "
        f"sampled every {sc.sample_every}, maintenance {sc.maintenance}"
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
    """0 all good, 1 the table or the ledger disagrees (rows lost or duplicated, a commit not of
    exactly F files), 2 the run itself failed (nothing measured)."""
    if not report["runs"]:
        return 2
    return 0 if report["ok"] else 1
