"""Fleet model (``python -m load model``): replicas, batch size, in-flight window and KEDA queueLength
for target file rates, from one replica's measured rate ``r`` and the table lock's hold per commit ``h``.

Commits to one table are serialized fleet-wide (PostgreSQL advisory lock from the Iceberg append to
the ledger finalize), so one table takes at most ``1/h`` commits/s: at ``R`` files/s a commit must
carry at least ``R·h`` files. See load/README.md, "Fleet model".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_DRAIN_S = 60.0
DEFAULT_HEADROOM = 0.7
DEFAULT_MAX_BATCH_FILES = 5000
BATCH_MARGIN = 1.5  # plan commits 1.5x larger than one table strictly needs
IN_FLIGHT_BATCHES = 2  # per replica: one batch being written, the next one filling
SETTING_LIMIT = 100_000  # upper bound of ICEFEED_SQS_MAX_IN_FLIGHT and ICEFEED_BATCH_MAX_FILES
CAVEAT = (
    "caveat: on the local stack the per-replica rate is bound by the moto S3/SQS emulator (one Python "
    "process); for production, measure r and h against real AWS and pass --per-replica/--hold-s."
)
HOLD_ASSUMPTION = (
    "assumption: h does not grow with the files per commit. If the lock hold grows in proportion to the "
    "batch, larger batches do not raise a table's ceiling: re-measure h at the recommended batch size."
)


class ModelError(Exception):
    """Missing or invalid inputs (exit status 2)."""


@dataclass(frozen=True)
class Inputs:
    per_replica: float  # r: sustained files/s of ONE replica
    hold_s: float  # h: table lock hold per commit, seconds
    batch_files: float  # files per commit in the measurement
    drain_s: float = DEFAULT_DRAIN_S  # T: seconds a burst may wait for the fleet to absorb it
    headroom: float = DEFAULT_HEADROOM  # plan replicas at this fraction of r
    max_batch_files: int = DEFAULT_MAX_BATCH_FILES

    def validate(self) -> None:
        for name in ("per_replica", "hold_s", "batch_files", "drain_s"):
            if not getattr(self, name) > 0:
                raise ModelError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.headroom <= 1:
            raise ModelError(f"headroom must be in (0, 1], got {self.headroom}")
        if not 1 <= self.max_batch_files <= SETTING_LIMIT:
            raise ModelError(f"max batch files must be in [1, {SETTING_LIMIT}], got {self.max_batch_files}")


@dataclass(frozen=True)
class Ceiling:
    """One table at the measured settings."""

    files_per_commit: float
    hold_s: float
    commits_per_s: float  # 1/h
    files_per_s: float  # files_per_commit / h
    replicas_useful: int  # more replicas on one table add nothing


@dataclass(frozen=True)
class Plan:
    """The settings for one target rate."""

    target: float  # files/s
    replicas: int
    files_per_commit_needed: float  # R·h
    batch_files: int  # ICEFEED_BATCH_MAX_FILES
    in_flight: int  # ICEFEED_SQS_MAX_IN_FLIGHT
    queue_length: int  # KEDA queueLength
    tables: int  # minimum, if h does not grow with the batch
    tables_if_hold_per_file: int  # if h grows in proportion to the batch (ceiling stays b0/h per table)
    commits_per_s_per_table: float
    lock_busy: float  # fraction of the time one table's lock is held
    burst_drain_s: float  # queueLength / r: how long a replica's share of a burst takes
    bound: str  # "ok" | "near" (batch capped, margin < BATCH_MARGIN) | "table" (one table cannot keep up)
    note: str


def _ceil(x: float) -> int:
    """Ceiling that ignores float noise (28.000000000001 → 28)."""
    return math.ceil(round(x, 9))


def replicas(rate: float, per_replica: float, headroom: float) -> int:
    return max(1, _ceil(rate / (per_replica * headroom)))


def files_per_commit_needed(rate: float, hold_s: float) -> float:
    """One table takes ≤ 1/h commits/s, so each commit must carry ≥ R·h files."""
    return rate * hold_s


def recommended_batch(needed: float, measured: float, max_batch: int) -> int:
    return min(max(_ceil(measured), _ceil(needed * BATCH_MARGIN)), max_batch)


def tables_needed(needed: float, max_batch: int) -> int:
    return max(1, _ceil(needed / max_batch))


def in_flight(batch: int) -> int:
    """Two batches per replica; never below one batch (a batch cannot exceed what a replica holds)."""
    return max(batch, min(IN_FLIGHT_BATCHES * batch, SETTING_LIMIT))


def queue_length(per_replica: float, drain_s: float, window: int) -> int:
    """r·T, but never below the in-flight window: KEDA counts in-flight messages (scaleOnInFlight)."""
    return max(_ceil(per_replica * drain_s), window)


def single_table_ceiling(batch_files: float, hold_s: float, per_replica: float) -> Ceiling:
    files_per_s = batch_files / hold_s
    return Ceiling(batch_files, hold_s, 1 / hold_s, files_per_s, max(1, _ceil(files_per_s / per_replica)))


def plan(rate: float, inp: Inputs) -> Plan:
    """The settings for ``rate`` files/s into one table (or the tables it must be split over)."""
    needed = files_per_commit_needed(rate, inp.hold_s)
    batch = recommended_batch(needed, inp.batch_files, inp.max_batch_files)
    flight = in_flight(batch)
    tables = tables_needed(needed, inp.max_batch_files)
    commits = rate / tables / batch
    length = queue_length(inp.per_replica, inp.drain_s, flight)
    worst = max(1, _ceil(rate / single_table_ceiling(inp.batch_files, inp.hold_s, inp.per_replica).files_per_s))
    if tables > 1:
        bound = "table"
        note = (
            f"single-table bound: {needed:,.0f} files/commit needed > {inp.max_batch_files:,}; split the stream "
            f"over {tables} tables (or independent prefixes routed to separate tables), or raise batch size / "
            "max wait (ICEFEED_BATCH_MAX_FILES, ICEFEED_BATCH_MAX_WAIT_S)"
        )
    elif needed * BATCH_MARGIN > batch:
        bound = "near"
        note = f"near the single-table bound: batch capped at {batch:,}, {batch / needed:.2f}x the {needed:,.0f} needed"
    else:
        bound, note = "ok", "one table keeps up"
    return Plan(
        rate,
        replicas(rate, inp.per_replica, inp.headroom),
        needed,
        batch,
        flight,
        length,
        tables,
        worst,
        commits,
        commits * inp.hold_s,
        length / inp.per_replica,
        bound,
        note,
    )


# -- inputs ---------------------------------------------------------------------------------------


def load_report(path: Path) -> dict[str, Any] | None:
    """The report, or None when the file does not exist."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"report {path}: {error}") from error
    if not isinstance(data, dict):
        raise ModelError(f"report {path}: not a JSON object")
    return data


def report_value(report: dict[str, Any] | None, dotted: str) -> float | None:
    """A positive number at ``a.b.c`` in the report, else None."""
    node: Any = report
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, bool) or not isinstance(node, int | float) or not node > 0:
        return None
    return float(node)


HOLD_UPPER_BOUND = " (upper bound of h: the whole batch, fetch/decode outside the lock included)"


def resolve(
    report: dict[str, Any] | None,
    report_path: Path,
    overrides: dict[str, float | None],
) -> tuple[Inputs, dict[str, str]]:
    """Inputs and where each came from: an override (``--flag``), a report key or the default."""
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    candidates: dict[str, tuple[str, list[tuple[str, str]]]] = {
        "per_replica": ("--per-replica", [("files_per_s_1", "")]),
        "hold_s": (
            "--hold-s",
            [("phases.drain1.commit_hold_s_p50", ""), ("phases.drain1.batch_seconds_p50", HOLD_UPPER_BOUND)],
        ),
        "batch_files": ("--batch-files", [("phases.drain1.files_per_batch_mean", "")]),
    }
    for name, (flag, keys) in candidates.items():
        override = overrides.get(name)
        if override is not None:
            values[name], sources[name] = float(override), flag
            continue
        for key, remark in keys:
            found = report_value(report, key)
            if found is not None:
                values[name], sources[name] = found, f"report {key}{remark}"
                break
        else:
            if name == "batch_files" and (per_1000 := report_value(report, "commits_per_1000_files")):
                values[name], sources[name] = 1000 / per_1000, "report 1000 / commits_per_1000_files"
                continue
            if report is None:
                raise ModelError(
                    f"report {report_path} not found: run `python -m load run` first, pass --report PATH, "
                    "or give --per-replica, --hold-s and --batch-files"
                )
            raise ModelError(f"report {report_path} lacks {' or '.join(k for k, _ in keys)}; pass {flag}")
    defaults = {"drain_s": DEFAULT_DRAIN_S, "headroom": DEFAULT_HEADROOM, "max_batch_files": DEFAULT_MAX_BATCH_FILES}
    flags = {"drain_s": "--drain-seconds", "headroom": "--headroom", "max_batch_files": "--max-batch-files"}
    for name, default in defaults.items():
        override = overrides.get(name)
        values[name] = default if override is None else override
        sources[name] = "default" if override is None else flags[name]
    inp = Inputs(
        values["per_replica"],
        values["hold_s"],
        values["batch_files"],
        values["drain_s"],
        values["headroom"],
        int(values["max_batch_files"]),
    )
    inp.validate()
    return inp, sources


def parse_targets(text: str) -> list[float]:
    try:
        targets = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as error:
        raise ModelError(f"--targets {text!r}: comma-separated files/s expected") from error
    if not targets or min(targets) <= 0:
        raise ModelError(f"--targets {text!r}: positive files/s expected")
    return targets


# -- output ---------------------------------------------------------------------------------------

LABELS = {
    "per_replica": "r  files/s of one replica",
    "hold_s": "h  lock hold per commit, s",
    "batch_files": "b0 files per commit measured",
    "drain_s": "T  target drain, s",
    "headroom": "headroom (plan at r x this)",
    "max_batch_files": "max batch files",
}
CONTEXT_KEYS = (
    "settings.effective.batch.max_files",
    "settings.effective.batch.max_wait_s",
    "settings.effective.sqs.max_in_flight",
    "settings.effective.spark.concurrency",
    "phases.drain1.files_per_s_after_first_commit",
    "phases.drain1.commit_hold_s_p95",
    "phases.drain1.lock_wait_s_p50",
)


def context(report: dict[str, Any] | None) -> dict[str, float]:
    """Measurement settings and side figures worth showing next to the inputs."""
    found = {key: report_value(report, key) for key in CONTEXT_KEYS}
    out = {key: value for key, value in found.items() if value is not None}
    k, fleet, one = (report_value(report, key) for key in ("k", "files_per_s_k", "files_per_s_1"))
    if k and fleet and one:
        out["files_per_s_k / (k x files_per_s_1)"] = round(fleet / (k * one), 3)
    return out


def build(inp: Inputs, sources: dict[str, str], targets: list[float], ctx: dict[str, float]) -> dict[str, Any]:
    return {
        "inputs": {name: {"value": getattr(inp, name), "source": sources[name]} for name in LABELS},
        "context": ctx,
        "single_table_ceiling": asdict(single_table_ceiling(inp.batch_files, inp.hold_s, inp.per_replica)),
        "plans": [asdict(plan(rate, inp)) for rate in targets],
        "notes": [HOLD_ASSUMPTION, CAVEAT],
    }


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 or x == int(x) else f"{x:,.2f}"


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, 110, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False)


COLUMNS = (
    ("files/s", lambda p: _num(p["target"])),
    ("replicas", lambda p: str(p["replicas"])),
    ("batch files", lambda p: str(p["batch_files"])),
    ("in-flight", lambda p: str(p["in_flight"])),
    ("queueLength", lambda p: str(p["queue_length"])),
    ("burst s", lambda p: f"{p['burst_drain_s']:.0f}"),
    ("commits/s/tbl", lambda p: f"{p['commits_per_s_per_table']:.2f}"),
    ("lock busy", lambda p: f"{p['lock_busy']:.0%}"),
    ("tables", lambda p: str(p["tables"])),
    ("if h~batch", lambda p: str(p["tables_if_hold_per_file"])),
)


def render(result: dict[str, Any]) -> str:
    """The human-readable report: inputs and their sources, the ceiling, one row per target."""
    lines = ["inputs:"]
    for name, label in LABELS.items():
        item = result["inputs"][name]
        lines.append(f"  {label:<30} {_num(item['value']):>9}  {item['source']}")
    if result["context"]:
        lines.append("measured with / alongside:")
        lines += [f"  {key} = {_num(value)}" for key, value in result["context"].items()]
    c = result["single_table_ceiling"]
    lines += _wrap(
        f"single-table ceiling at the measured settings: {_num(c['files_per_commit'])} files/commit / "
        f"{c['hold_s']:g} s = {_num(c['files_per_s'])} files/s ({c['commits_per_s']:.2f} commits/s); "
        f"replicas useful on one table: {c['replicas_useful']}"
    )
    cells = [[fmt(p) for _, fmt in COLUMNS] for p in result["plans"]]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, (h, _) in enumerate(COLUMNS)]
    lines += ["", "  ".join(h.rjust(w) for (h, _), w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append("")
    for p in result["plans"]:
        lines += _wrap(f"{_num(p['target'])} files/s: {p['note']}")
    lines += _wrap(
        "batch files = ICEFEED_BATCH_MAX_FILES; in-flight = ICEFEED_SQS_MAX_IN_FLIGHT (2 batches per replica); "
        "queueLength = max(r x T, in-flight); burst s = queueLength / r, the time a replica's share of a burst "
        "takes; replicas = ceil(target / (r x headroom)), maxReplicaCount must allow them; tables = the minimum "
        "(its lock may be up to 100% busy); if h~batch = tables if the hold grows in proportion to the batch "
        "(target / single-table ceiling)."
    )
    for note in result["notes"]:
        lines += _wrap(note)
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    overrides = {
        "per_replica": args.per_replica,
        "hold_s": args.hold_s,
        "batch_files": args.batch_files,
        "drain_s": args.drain_seconds,
        "headroom": args.headroom,
        "max_batch_files": args.max_batch_files,
    }
    try:
        targets = parse_targets(args.targets)
        report = load_report(args.report)
        inp, sources = resolve(report, args.report, overrides)
    except ModelError as error:
        print(f"load model: {error}", file=sys.stderr)
        return 2
    result = build(inp, sources, targets, context(report))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0
