"""What one ``python -m load run`` does: the scenario (sizes, samples, phases) and its presets."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PHASES = ("ceiling", "naive", "drain1", "latency", "drain_k", "soak")

PRESETS: dict[str, dict[str, Any]] = {
    # The standard scenario: 5000 small JSON files per drain, a fleet of 3 workers.
    "standard": {},
    # CI: correctness of the harness end to end in a couple of minutes, not speed.
    "smoke": {
        "files": 40,
        "k": 2,
        "drift_pct": 10.0,
        "bad_pct": 5.0,
        "ceiling_levels": (1, 4),
        "ceiling_tune_msgs": 20,
        "ceiling_msgs": 0,
        "queue_depth": 20,  # two landing queues: the sharded path is exercised too
        "naive_files": 10,
        "lone_files": 1,
        "paced_seconds": 8.0,
        "soak": False,
        # Short long-polls so that stopping a worker does not wait out a 20 s poll.
        "worker_env": {"ICEFEED_SQS_WAIT_TIME_S": "2"},
    },
}


@dataclass
class Harness:
    """What every load scenario has: extra worker settings, its outputs and its work directory."""

    preset: str = "standard"
    worker_env: dict[str, str] = field(default_factory=dict)
    out: Path = Path("load/results/latest.json")
    chart: Path = Path("load/results/latest.png")
    workdir: Path | None = None
    keep: bool = False
    seed: int = 20261122

    def check_worker_env(self) -> None:
        for name in self.worker_env:
            if not name.startswith("ICEFEED_"):
                raise ValueError(f"--worker-env {name}: only ICEFEED_* variables")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, tuples as lists."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


def add_harness_args(p: argparse.ArgumentParser, out: Path, chart: Path) -> None:
    """The options of :class:`Harness`: --worker-env, --out, --chart, --workdir, --keep."""
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="ICEFEED_X=V", help="extra worker setting (repeatable)"
    )
    p.add_argument("--out", type=Path, help=f"JSON report (default {out})")
    p.add_argument("--chart", type=Path, help=f"PNG chart (default {chart})")
    p.add_argument("--workdir", type=Path, help="keep the stack's files here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir and the ledger schema")


def overrides_from_args(
    args: argparse.Namespace, simple: dict[str, str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The scenario fields the command line sets: each ``simple`` option given (option → field),
    the :class:`Harness` options, and ``worker_env`` = ``env`` (a preset's) plus every --worker-env."""
    simple = {**simple, "out": "out", "chart": "chart", "workdir": "workdir"}
    overrides: dict[str, Any] = {
        attr: getattr(args, arg) for arg, attr in simple.items() if getattr(args, arg) is not None
    }
    if args.keep:
        overrides["keep"] = True
    env = dict(env or {})
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--worker-env {item!r}: expected NAME=VALUE")
        env[name.strip()] = value
    overrides["worker_env"] = env
    return overrides


@dataclass
class Scenario(Harness):
    files: int = 5000
    rows_per_file: int = 20
    format: str = "json"
    drift_pct: float = 0.0
    bad_pct: float = 0.0
    k: int = 3
    # ceiling: concurrency levels tried on ceiling_tune_msgs messages each; the best one then
    # drains a backlog of ceiling_msgs messages (0: as many as a drain phase, --files).
    ceiling_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    ceiling_tune_msgs: int = 200
    ceiling_msgs: int = 0
    naive_files: int = 150
    lone_files: int = 3
    lone_gap_s: float = 3.0
    paced_seconds: float = 60.0
    paced_fraction: float = 0.5
    paced_rate: float | None = None
    soak: bool = False
    soak_files: int = 20000
    soak_rate: float | None = None
    phases: tuple[str, ...] = PHASES
    upload_threads: int = 8
    # moto's ReceiveMessage costs ~0.5 ms per message already in the queue (2.5 s per call at a
    # depth of 5000): a backlog is spread over landing buckets, each with its own queue, so that
    # no queue holds more than queue_depth messages (0: one bucket and queue, however deep).
    queue_depth: int = 250
    phase_timeout_s: float = 1800.0
    stall_timeout_s: float = 600.0
    sample_interval_s: float = 0.5
    py_spy_dir: Path | None = None

    def validate(self) -> None:
        if self.files < 1 or self.rows_per_file < 1 or self.k < 1:
            raise ValueError("--files, --rows-per-file and --k must be at least 1")
        if not 0 <= self.drift_pct <= 100 or not 0 <= self.bad_pct <= 100 or self.drift_pct + self.bad_pct > 100:
            raise ValueError("--drift-pct and --bad-pct are percentages whose sum is at most 100")
        if self.format != "json":
            raise ValueError("only --format json is implemented")
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phases: {', '.join(sorted(unknown))} (known: {', '.join(PHASES)})")
        if not self.ceiling_levels or min(self.ceiling_levels) < 1:
            raise ValueError("--ceiling-levels must be positive integers")
        self.check_worker_env()

    def shards(self) -> int:
        """Landing buckets (and queues) per loader: enough to keep each queue ≤ queue_depth."""
        if self.queue_depth <= 0:
            return 1
        return max(1, min(64, -(-self.files // self.queue_depth)))

    def wants(self, phase: str) -> bool:
        if phase == "soak":
            return self.soak
        return phase in self.phases


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m load", description="icefeed load and benchmark harness")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a local stack and measure ceiling, naive loop and icefeed side by side")
    run.add_argument("--smoke", action="store_true", help="tiny preset for CI (40 files, K=2, no soak)")
    run.add_argument("--files", type=int, help="files staged per drain phase (default 5000)")
    run.add_argument("--rows-per-file", type=int, help="JSON lines per file (default 20)")
    run.add_argument("--format", choices=["json"], help="file format (json lines)")
    run.add_argument("--drift-pct", type=float, help="percent of files that add a new column")
    run.add_argument("--bad-pct", type=float, help="percent of files with a malformed line")
    run.add_argument("--k", type=int, help="worker processes of the fleet phase (default 3)")
    run.add_argument("--ceiling-levels", help="comma-separated concurrency levels tried for the ceiling")
    run.add_argument("--ceiling-msgs", type=int, help="backlog of the ceiling's final measurement (default --files)")
    run.add_argument("--naive-files", type=int, help="files of the naive per-file loop's sample")
    run.add_argument("--lone-files", type=int, help="lone files timed on an idle worker")
    run.add_argument("--paced-seconds", type=float, help="duration of the paced-load latency phase")
    run.add_argument("--paced-rate", type=float, help="files/s of the paced phase (default half of files_per_s_1)")
    run.add_argument("--soak", action="store_true", help="also run a long soak (RSS flatness)")
    run.add_argument("--soak-files", type=int, help="files of the soak (default 20000)")
    run.add_argument("--soak-rate", type=float, help="files/s of the soak (default: the paced rate)")
    run.add_argument("--phases", help=f"comma-separated subset of {','.join(PHASES[:-1])}")
    run.add_argument(
        "--queue-depth",
        type=int,
        help="most messages per landing queue: the backlog is spread over enough buckets/queues (default 250; "
        "0 = one queue)",
    )
    run.add_argument("--phase-timeout", type=float, help="upper bound of any one phase, seconds (default 1800)")
    add_harness_args(run, Scenario.out, Scenario.chart)
    run.add_argument("--py-spy-dir", type=Path, help="record the drain-1 worker with py-spy (raw stacks) here")
    prof = sub.add_parser("profile", help="summarize a py-spy raw (collapsed stacks) recording")
    prof.add_argument("raw", type=Path)
    prof.add_argument("--top", type=int, default=25)
    model = sub.add_parser(
        "model", help="replicas, batch size and KEDA queueLength per target files/s, from a load report"
    )
    model.add_argument(
        "--report",
        type=Path,
        default=Path("load/results/latest.json"),
        help="harness JSON report (default load/results/latest.json)",
    )
    model.add_argument(
        "--per-replica",
        type=float,
        metavar="FILES_PER_S",
        help="files/s of one replica (default: report files_per_s_1)",
    )
    model.add_argument(
        "--hold-s",
        type=float,
        metavar="SECONDS",
        help="table lock hold per commit (default: drain1 commit_hold_s_p50, else batch_seconds_p50)",
    )
    model.add_argument("--batch-files", type=float, metavar="N", help="measured files per commit (default: report)")
    model.add_argument("--drain-seconds", type=float, metavar="T", help="target burst drain time (default 60)")
    model.add_argument("--headroom", type=float, help="plan replicas at this fraction of r (default 0.7)")
    model.add_argument("--max-batch-files", type=int, help="largest ICEFEED_BATCH_MAX_FILES to plan (default 5000)")
    model.add_argument(
        "--targets", default="1000,10000,100000", help="comma-separated target files/s (default 1000,10000,100000)"
    )
    model.add_argument("--json", action="store_true", help="machine-readable output")
    check = sub.add_parser(
        "cost-check", help="compare icefeed cost's requests per file with what a load report counted"
    )
    check.add_argument(
        "--report",
        type=Path,
        default=Path("load/results/latest.json"),
        help="harness JSON report (default load/results/latest.json)",
    )
    check.add_argument("--tolerance", type=float, default=0.10, help="relative tolerance (default 0.10)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    from load.history import add_parser as add_history

    add_history(sub)
    return p


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    base = Scenario(preset="smoke" if args.smoke else "standard")
    preset = dict(PRESETS[base.preset])
    env = preset.pop("worker_env", {})
    sc = replace(base, **preset)
    simple = {
        "files": "files",
        "rows_per_file": "rows_per_file",
        "format": "format",
        "drift_pct": "drift_pct",
        "bad_pct": "bad_pct",
        "k": "k",
        "ceiling_msgs": "ceiling_msgs",
        "naive_files": "naive_files",
        "lone_files": "lone_files",
        "paced_seconds": "paced_seconds",
        "paced_rate": "paced_rate",
        "soak_files": "soak_files",
        "soak_rate": "soak_rate",
        "phase_timeout": "phase_timeout_s",
        "queue_depth": "queue_depth",
        "py_spy_dir": "py_spy_dir",
    }
    overrides = overrides_from_args(args, simple, env)
    if args.ceiling_levels:
        overrides["ceiling_levels"] = tuple(int(x) for x in args.ceiling_levels.split(",") if x.strip())
    if args.phases:
        overrides["phases"] = tuple(x.strip() for x in args.phases.split(",") if x.strip())
    if args.soak:
        overrides["soak"] = True
    known = {f.name for f in fields(Scenario)}
    assert set(overrides) <= known
    sc = replace(sc, **overrides)
    sc.validate()
    return sc
