"""``python -m load cost-check``: does ``icefeed cost``'s model count what the load harness counted?

For each drain phase of a load report (``load/results/latest.json``: a backlog staged, then drained
by 1 or K workers), the model of worker/domain/cost.py is given what that drain was: its files and
workers, the landing queues, the workers' effective settings, the files per commit its ledger
recorded (as ``icefeed cost --from-ledger`` takes them), receives of ``ICEFEED_SQS_MAX_MESSAGES``
(a backlog fills them) and the per-commit counts of the ``ICEFEED_COST_*`` settings. Its requests
per file are then compared with the report's:

- SQS calls by operation: the workers' own counts (``worker_stopped.sqs_calls``);
- S3 requests on the landing and warehouse buckets: what moto served during the phase
  (``moto_requests_per_file``, by method and bucket role).

A figure within the tolerance (10 %) passes; one that both sides put under 0.005 per file counts
as zero. Two figures are shown without a verdict: catalog calls (moto logs Glue and SQS alike as
``POST /``, and the workers' last polls and deletes land after the phase's moto window, so
POST − SQS is only approximate) and commits per 1000 files predicted from the settings alone (a
drain's batches are bounded by how fast receives refill them, which the model does not know;
the check takes the ledger's figure, as ``--from-ledger`` does). The per-commit counts the
report implies are printed: set ``ICEFEED_COST_*`` to them when they differ.

Exit status: 0 every checked figure within the tolerance, 1 one is not, 2 no report or a figure
missing from it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DRAINS = ("drain1", "drain_k")
ZERO = 0.005  # requests per file under which a figure counts as none
DEFAULT_TOLERANCE = 0.10


class CheckError(Exception):
    """The report is missing or lacks a figure (exit 2)."""


@dataclass(frozen=True)
class Check:
    phase: str
    figure: str
    predicted: float
    measured: float
    gating: bool  # False: shown, no verdict
    ok: bool | None
    note: str = ""

    @property
    def deviation(self) -> float | None:
        if self.predicted == 0:
            return None
        return self.measured / self.predicted - 1


def _phase(report: dict[str, Any], name: str) -> dict[str, Any]:
    phase = report.get("phases", {}).get(name)
    if not phase:
        raise CheckError(f"the report has no {name} phase")
    for key in ("files", "workers", "committed_batches", "sqs_calls", "empty_receives", "moto_requests_per_file"):
        if phase.get(key) is None:
            raise CheckError(f"phases.{name}.{key} is missing")
    if not phase["committed_batches"]:
        raise CheckError(f"phases.{name} committed no batch")
    return dict(phase)


def _effective(report: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The workers' settings: the report's effective values over the product defaults (and the
    ``ICEFEED_COST_*`` of this environment for the per-commit counts)."""
    from worker.settings import Settings

    settings = Settings()
    effective = report.get("settings", {}).get("effective") or {}
    sqs = {**settings.sqs.model_dump(exclude={"queue_urls"}), **(effective.get("sqs") or {})}
    batch = {**settings.batch.model_dump(), **(effective.get("batch") or {})}
    return settings, sqs, batch


def model_for(report: dict[str, Any], name: str) -> tuple[Any, Any]:
    """The model's estimate of drain ``name`` and the fleet it assumed."""
    from worker.admin.cost import mechanics_of, prices_of
    from worker.domain import cost

    phase = _phase(report, name)
    settings, sqs, batch = _effective(report)
    fleet = cost.Fleet(
        workers=int(phase["workers"]),
        queues=int(report.get("landing_queues") or 1),
        receivers_per_queue=int(sqs["receivers"]),
        wait_time_s=float(sqs["wait_time_s"]),
        max_messages=int(sqs["max_messages"]),
        batch_max_files=int(batch["max_files"]),
        batch_max_wait_s=float(batch["max_wait_s"]),
        output_files=int(batch["output_files"]),
        maintenance=None,  # a worker's first maintenance run comes an interval (300 s) after its start
    )
    files = int(phase["files"])
    seconds = float(phase.get("seconds") or 1.0)
    workload = cost.Workload(
        files_per_day=files / seconds * cost.SECONDS_PER_DAY,
        tables=1,
        engine_s_per_commit=float(phase.get("commit_hold_s_p50") or 1.0),  # no request depends on it
        engine_s_per_file=0.0,
        messages_per_receive=float(fleet.max_messages),
        files_per_commit=files / int(phase["committed_batches"]),
    )
    return cost.estimate(workload, fleet, mechanics_of(settings), prices_of(settings), True), fleet


def predicted(report: dict[str, Any], name: str) -> dict[str, float]:
    """The model's requests per file for drain ``name`` (and its commits per 1000 files from
    the settings alone). The empty receives of a drain are its tail: once a queue is dry, each
    of its pollers long-polls in vain until the last batch is committed and the worker stops —
    one empty receive per poller at least, plus one per wait time of the longest batch."""
    est, fleet = model_for(report, name)
    phase = _phase(report, name)
    s = est.scenario("icefeed")
    per = s.files_per_month
    q: dict[str, float] = {}
    for line in s.lines:
        q[line.item] = q.get(line.item, 0.0) + line.quantity / per
    files = int(phase["files"])
    tail_s = float(phase.get("batch_seconds_max") or 0.0)
    polls = (1 + tail_s / fleet.wait_time_s) if fleet.wait_time_s else 1.0
    empty = fleet.pollers * polls / files
    full = q["ReceiveMessage"]
    delete = q["DeleteMessageBatch"]
    visibility = q["ChangeMessageVisibilityBatch"]
    commits = s.commits_per_month / per
    return {
        "sqs_per_file": full + empty + delete + visibility,
        "sqs_working_per_file": full + delete + visibility,
        "receive_per_file": full + empty,
        "receive_full_per_file": full,
        "receive_empty_per_file": empty,
        "delete_per_file": delete,
        "visibility_per_file": visibility,
        "landing_reads_per_file": q.get("GetObject by the worker", 0.0) + q.get("engine reads + HEAD", 0.0),
        "landing_heads_per_file": 2 * est.workload.engine_read_fraction,  # the worker's, for engine-read files
        "warehouse_writes_per_file": q["commits: data files"] + q["commits: table metadata writes"],
        "warehouse_reads_per_file": q["commits: table metadata reads"],
        "catalog_per_file": q["commits: catalog calls"],
        "commits_per_1000_files": commits * 1000,
        # A backlog: every batch could be full (ICEFEED_BATCH_MAX_FILES).
        "commits_per_1000_files_from_settings": 1000 / fleet.batch_max_files,
    }


def _moto(phase: dict[str, Any], *keys: str) -> float:
    per_file = phase["moto_requests_per_file"]
    return float(sum(per_file.get(k, 0.0) for k in keys))


def measured(report: dict[str, Any], name: str) -> dict[str, float]:
    """What the harness counted in drain ``name``, per file."""
    phase = _phase(report, name)
    files = int(phase["files"])
    calls = {k: float(v) for k, v in (phase.get("sqs_calls") or {}).items()}
    sqs = sum(calls.values()) / files
    empty = float(phase.get("empty_receives") or 0.0) / files
    receive = calls.get("ReceiveMessage", 0.0) / files
    return {
        "sqs_per_file": sqs,
        "sqs_working_per_file": sqs - empty,
        "receive_per_file": receive,
        "receive_full_per_file": receive - empty,
        "receive_empty_per_file": empty,
        "delete_per_file": calls.get("DeleteMessageBatch", 0.0) / files,
        "visibility_per_file": calls.get("ChangeMessageVisibilityBatch", 0.0) / files,
        "landing_reads_per_file": _moto(phase, "S3 GET landing", "S3 HEAD landing"),
        "landing_heads_per_file": _moto(phase, "S3 HEAD landing"),
        "warehouse_writes_per_file": _moto(phase, "S3 PUT warehouse", "S3 POST warehouse"),
        "warehouse_reads_per_file": _moto(phase, "S3 GET warehouse", "S3 HEAD warehouse"),
        "catalog_per_file": max(0.0, _moto(phase, "POST / (SQS, Glue)") - sqs),
        "commits_per_1000_files": int(phase["committed_batches"]) / files * 1000,
        "commits_per_1000_files_from_settings": int(phase["committed_batches"]) / files * 1000,
    }


CROSS = "per commit as the other drain measured it, × this drain's commits"
JAVA = "the per-commit settings describe Iceberg's Java library; set them to your engine's (below)"
FIGURES = (
    ("sqs_working_per_file", "SQS calls per file (besides empty polls)", True, ""),
    ("receive_full_per_file", "ReceiveMessage with messages per file", True, "receives of 10"),
    ("sqs_per_file", "SQS calls per file (all)", False, "with the tail estimate below"),
    (
        "receive_empty_per_file",
        "empty long polls per file",
        False,
        "a drain's tail: every poller, for the longest batch (the model's steady-state formula is another)",
    ),
    ("delete_per_file", "DeleteMessageBatch per file", True, "10 a call per queue, after each commit"),
    ("visibility_per_file", "ChangeMessageVisibilityBatch per file", True, "none without retries"),
    ("landing_reads_per_file", "S3 GET+HEAD per file, landing", True, "one GET per worker-read file"),
    ("landing_heads_per_file", "S3 HEAD per file, landing", True, "none for worker-read files (JSON)"),
    ("warehouse_writes_per_file", "S3 PUT per file, warehouse", True, CROSS),
    ("warehouse_reads_per_file", "S3 GET+HEAD per file, warehouse", True, CROSS),
    ("warehouse_writes_per_file_defaults", "S3 PUT per file, warehouse (ICEFEED_COST_*)", False, JAVA),
    ("warehouse_reads_per_file_defaults", "S3 GET+HEAD per file, warehouse (ICEFEED_COST_*)", False, JAVA),
    ("commits_per_1000_files", "commits per 1000 files (ledger)", True, "as --from-ledger takes it"),
    ("catalog_per_file", "catalog calls per file", False, "moto POST / minus the workers' SQS calls: approximate"),
    (
        "commits_per_1000_files_from_settings",
        "commits per 1000 files (settings alone)",
        False,
        "full batches of ICEFEED_BATCH_MAX_FILES: a drain's are smaller",
    ),
)


def verdict(p: float, m: float, tolerance: float) -> bool:
    if p < ZERO and m < ZERO:
        return True
    return abs(m - p) <= tolerance * max(p, m)


def compare(report: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> list[Check]:
    names = [n for n in DRAINS if report.get("phases", {}).get(n)]
    if not names:
        raise CheckError("the report has no drain phase (drain1, drain_k)")
    out = []
    for name in names:
        p, m = predicted(report, name), measured(report, name)
        for key in ("warehouse_writes_per_file", "warehouse_reads_per_file"):
            p[f"{key}_defaults"], m[f"{key}_defaults"] = p[key], m[key]
            p[key] = _cross(report, name, key, p[key])
        for key, label, gating, note in FIGURES:
            ok = verdict(p[key], m[key], tolerance) if gating else None
            out.append(Check(name, label, p[key], m[key], gating, ok, note))
    return out


def _cross(report: dict[str, Any], name: str, key: str, fallback: float) -> float:
    """The engine's S3 requests per commit on the warehouse are the engine's, not icefeed's: the
    check measures them on the OTHER drain and predicts this drain's from its own commits (the
    model's structure: so many requests per commit). With one drain, the ICEFEED_COST_* figure."""
    others = [n for n in DRAINS if n != name and report.get("phases", {}).get(n)]
    if not others:
        return fallback
    other = measured(report, others[0])
    per_commit = other[key] * 1000 / other["commits_per_1000_files"]
    return per_commit * measured(report, name)["commits_per_1000_files"] / 1000


def calibration(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-commit counts the report implies, per drain: what to set ``ICEFEED_COST_*`` to."""
    out = {}
    for name in DRAINS:
        phase = report.get("phases", {}).get(name)
        if not phase or not phase.get("committed_batches"):
            continue
        m = measured(report, name)
        per_commit = 1000 / m["commits_per_1000_files"]
        data_files = float(phase.get("data_files_per_commit") or report.get("data_files_per_commit") or 1.0)
        out[name] = {
            "metadata_reads_per_commit": m["warehouse_reads_per_file"] * per_commit,
            "metadata_writes_per_commit": m["warehouse_writes_per_file"] * per_commit - data_files,
            "catalog_calls_per_commit (approximate)": m["catalog_per_file"] * per_commit,
        }
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:,.1f}"


def render(checks: list[Check], calib: dict[str, dict[str, float]], tolerance: float, path: Path) -> str:
    lines = [
        f"icefeed cost vs the load harness: {path} (tolerance {tolerance:.0%})",
        "",
        f"{'phase':<8} {'figure':<42} {'model':>10} {'harness':>10} {'diff':>8}  verdict",
    ]
    for c in checks:
        dev = "—" if c.deviation is None else f"{c.deviation:+.1%}"
        word = "ok" if c.ok else ("FAIL" if c.ok is False else "shown")
        lines.append(
            f"{c.phase:<8} {c.figure:<42} {_fmt(c.predicted):>10} {_fmt(c.measured):>10} {dev:>8}  {word}"
            + (f"  ({c.note})" if c.note else "")
        )
    if calib:
        lines += ["", "per-commit counts the report implies (ICEFEED_COST_*):"]
        for name, figures in calib.items():
            lines.append(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    failed = [c for c in checks if c.ok is False]
    lines += ["", "RESULT: " + ("OK" if not failed else f"{len(failed)} figure(s) off by more than {tolerance:.0%}")]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    path: Path = args.report
    try:
        if not path.exists():
            raise CheckError(f"report {path} not found: run `python -m load run` first, or pass --report PATH")
        report = json.loads(path.read_text())
        checks = compare(report, args.tolerance)
        calib = calibration(report)
    except (CheckError, KeyError, ValueError) as error:
        print(f"load cost-check: {error}")
        return 2
    if args.json:
        doc = {"report": str(path), "tolerance": args.tolerance, "checks": [asdict(c) for c in checks]}
        print(json.dumps({**doc, "calibration": calib}, indent=2))
    else:
        print(render(checks, calib, args.tolerance, path))
    return 1 if any(c.ok is False for c in checks) else 0
