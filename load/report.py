"""The outputs of a run: the JSON report, the printed summary and the PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The headline metrics of a report, in the order the summary prints them: every report has each
#: key (``None`` when its phase did not run). The load smoke test checks them.
REPORT_KEYS = (
    "ceiling_msgs_per_s",
    "naive_files_per_s",
    "files_per_s_1",
    "files_per_s_k",
    "k",
    "rows_per_s_1",
    "rows_per_s_k",
    "icefeed_vs_ceiling",
    "icefeed_vs_naive",
    "icefeed_1_vs_naive",
    "commits_per_1000_files",
    "data_files_per_commit",
    "sqs_calls_per_file",
    "lone_latency_s",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "rss_growth_pct",
    "cpu_s_per_1000_files_1",
    "cpu_s_per_1000_files_k",
    "lost_files",
    "duplicated_rows",
)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def summary(report: dict[str, Any]) -> str:
    sc = report["settings"]["scenario"]
    m = report["machine"]
    ph = report["phases"]
    lines = [
        "",
        f"icefeed load run — preset {sc['preset']}: {sc['files']} files × {sc['rows_per_file']} rows per drain, "
        f"K={report['k']}, drift {sc['drift_pct']} %, bad {sc['bad_pct']} %, "
        f"{report.get('landing_queues', 1)} landing queue(s) of ≤ {sc['queue_depth'] or sc['files']} messages",
        f"machine: {m['cpu_count']} CPUs, load average {m['loadavg_start'][0]} → {m['loadavg_end'][0]}; "
        f"wall time {report['wall_s']} s",
        "",
        f"{'metric':<34}{'value':>14}  note",
        f"{'-' * 34}{'-' * 14}  {'-' * 40}",
    ]
    ceiling = ph.get("ceiling", {})
    naive = ph.get("naive", {})
    d1 = ph.get("drain1", {})
    dk = ph.get("drain_k", {})
    lat = ph.get("latency", {})
    notes = {
        "ceiling_msgs_per_s": f"bare receive+GET+delete, concurrency {ceiling.get('concurrency', '—')}",
        "naive_files_per_s": "1 message → 1 read → 1 commit → delete",
        "files_per_s_1": "backlog drain, 1 worker",
        "files_per_s_k": f"backlog drain, {report['k']} workers",
        "icefeed_vs_ceiling": "files_per_s_k / ceiling",
        "icefeed_vs_naive": "files_per_s_k / naive",
        "icefeed_1_vs_naive": "files_per_s_1 / naive",
        "commits_per_1000_files": "COMMITTED batches, drain phases",
        "data_files_per_commit": "pyiceberg added-data-files per append",
        "sqs_calls_per_file": "worker_stopped sqs_calls / files, drains",
        "lone_latency_s": "one file on an idle worker (median)",
        "p50_latency_s": f"paced at {lat.get('paced_rate_target', '—')} files/s, upload→LOADED",
        "rss_growth_pct": f"{report['rss_growth_source']} worker, last vs first quartile after warm-up",
        "cpu_s_per_1000_files_1": "worker CPU, 1-worker drain",
        "cpu_s_per_1000_files_k": "worker CPU (all K), K-worker drain",
    }
    for key in REPORT_KEYS:
        if key != "k":  # printed in the headline
            lines.append(f"{key:<34}{_fmt(report.get(key)):>14}  {notes.get(key, '')}")
    lines += [
        "",
        f"{'phase':<9}{'files':>7}{'secs':>8}{'files/s':>9}{'commits':>8}{'f/batch':>8}"
        f"{'sqs/f':>7}{'busy%':>7}  cpu s / 1000 files (workers, moto, sail, harness)",
    ]
    for name in ("ceiling", "naive", "drain1", "latency", "drain_k", "soak"):
        p = ph.get(name)
        if not p:
            continue
        files = p.get("files") or p.get("paced_files")
        rate = p.get("files_per_s") or p.get("msgs_per_s") or p.get("paced_rate_target")
        cpu = p.get("cpu_s_per_1000_files", {})
        cpu_text = ", ".join(_fmt(cpu.get(k)) for k in ("workers", "moto", "sail", "harness"))
        lines.append(
            f"{name:<9}{_fmt(files):>7}{_fmt(p.get('seconds')):>8}{_fmt(rate):>9}"
            f"{_fmt(p.get('committed_batches')):>8}{_fmt(p.get('files_per_batch_mean')):>8}"
            f"{_fmt(p.get('sqs_calls_per_file')):>7}{_fmt(p.get('system_cpu_busy_pct')):>7}  {cpu_text}"
        )
    for name, p in (("drain1", d1), ("drain_k", dk)):
        if p:
            reqs = ", ".join(f"{k} {v}" for k, v in p.get("moto_requests_per_file", {}).items())
            lines.append(f"moto requests per file, {name}: {reqs}")
    if naive:
        lines.append(f"naive per-file seconds: {naive.get('per_file_s')}")
    c = report["correctness"]
    lines += [
        "",
        f"correctness (pyiceberg vs staged): {c.get('staged_files')} files, {c.get('table_rows')} rows; "
        f"lost_files {c.get('lost_files')}, short_files {c.get('short_files')}, "
        f"duplicated_rows {c.get('duplicated_rows')}, stray_rows {c.get('stray_rows')}, "
        f"ledger_mismatches {c.get('ledger_mismatches')}, bad files {c.get('bad_files')} "
        f"(with rows: {c.get('bad_files_with_rows')}); ledger {c.get('ledger_statuses')}",
    ]
    for error in report["errors"]:
        lines.append(f"ERROR: {error}")
    lines.append("RESULT: " + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    timeline = report["timeline"]
    labels = {
        "ceiling": "ceiling (bare consumer)",
        "naive": "naive per-file loop",
        "drain1": "icefeed drain, 1 worker",
        "drain_k": f"icefeed drain, {report['k']} workers",
        "paced": "icefeed paced load",
    }
    ax = axes[0][0]
    for name, series in timeline.items():
        done = series["done_s"]
        ax.plot([0.0, *done], range(len(done) + 1), label=labels.get(name, name), drawstyle="steps-post")
    ax.set_title("files done since the phase started")
    ax.set_xlabel("seconds")
    ax.set_ylabel("files (cumulative)")
    if timeline:
        ax.legend(fontsize=8)

    ax = axes[0][1]
    for name, series in timeline.items():
        done = series["done_s"]
        if not done:
            continue
        width = max(1.0, done[-1] / 30)  # about 30 bins per phase, at least 1 s
        counts = [0] * (int(done[-1] / width) + 1)
        for t in done:
            counts[int(t / width)] += 1
        xs = [i * width for i in range(len(counts) + 1)]
        ax.stairs([c / width for c in counts], xs, label=labels.get(name, name))
    ax.set_title("throughput over time (≈30 bins per phase, ≥ 1 s)")
    ax.set_xlabel("seconds since the phase started")
    ax.set_ylabel("files / s")
    if timeline:
        ax.legend(fontsize=8)

    ax = axes[1][0]
    names = ["lone", "p50", "p95", "p99"]
    values = [report.get(k) or 0 for k in ("lone_latency_s", "p50_latency_s", "p95_latency_s", "p99_latency_s")]
    bars = ax.bar(names, values, color=["#888", "#4c72b0", "#dd8452", "#c44e52"])
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
    lat = report["phases"].get("latency", {})
    ax.set_title(f"upload → queryable latency (paced at {lat.get('paced_rate_target', '—')} files/s)")
    ax.set_ylabel("seconds")

    ax = axes[1][1]
    for label, points in report["rss_mb"].items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1)
    ax.set_title("RSS over the run")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("MB")
    if any(report["rss_mb"].values()):
        ax.legend(fontsize=7)

    c = report["correctness"]
    fig.suptitle(
        f"icefeed load — ceiling {report.get('ceiling_msgs_per_s')} msgs/s · naive {report.get('naive_files_per_s')}"
        f" files/s · icefeed {report.get('files_per_s_1')} (1) / {report.get('files_per_s_k')} (K={report['k']})"
        f" files/s · lost {c.get('lost_files')} · dup {c.get('duplicated_rows')}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
