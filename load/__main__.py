"""``python -m load run [--smoke] …`` (and ``history``, ``model``, ``cost-check``, ``profile``) — see load/README.md.
Exit status of ``run``: 0 all good, 1 rows lost or duplicated (or the ledger disagrees with the
table), 2 the run itself failed; ``history`` likewise (load/history.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from load.config import Harness, parser, scenario_from_args

Report = dict[str, Any]
Say = Callable[[str], None]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "profile":
        from load.profile import summarize

        print(summarize(args.raw, args.top))
        return 0
    if args.command == "cost-check":
        from load.costcheck import main as cost_check_main

        return cost_check_main(args)
    if args.command == "model":
        from load.model import main as model_main

        return model_main(args)
    if args.command == "history":
        from load import history

        return drive(
            args,
            history.scenario_from_args,
            history.headline,
            history.execute,
            history.chart,
            history.summary,
            history.exit_status,
        )

    from load.bench import Bench
    from load.report import chart, summary

    def headline(sc: Any) -> str:
        return (
            f"icefeed load run, preset {sc.preset}: {sc.files} files per drain, K={sc.k}, phases {', '.join(sc.phases)}"
        )

    return drive(args, scenario_from_args, headline, lambda sc, say: Bench(sc, say).run(), chart, summary, run_status)


def run_status(report: Report) -> int:
    if report["errors"]:
        correct = all(report.get(k) == 0 for k in ("lost_files", "duplicated_rows"))
        return 2 if correct else 1
    return 0 if report["ok"] else 1


def drive(
    args: argparse.Namespace,
    parse: Callable[[argparse.Namespace], Any],
    headline: Callable[[Any], str],
    run: Callable[[Any, Say], Report],
    draw: Callable[[Report, Any], None],
    summarize: Callable[[Report], str],
    status: Callable[[Report], int],
) -> int:
    """One scenario from its options to its exit status: the scenario (a bad option: exit 2), the
    run (it could not run at all: exit 2), then the JSON report, the chart (a chart problem is an
    error of the report, never hides its figures), the printed summary and ``status(report)``."""
    from load.report import write_json

    try:
        sc: Harness = parse(args)
    except ValueError as error:
        print(f"load: {error}", file=sys.stderr)
        return 2
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {message}", flush=True)

    say(headline(sc))
    try:
        report = run(sc, say)
    except Exception as error:  # noqa: BLE001 - the stack could not start etc.: say so, exit 2
        say(f"run failed: {type(error).__name__}: {error}")
        return 2
    write_json(report, sc.out)
    try:
        draw(report, sc.chart)
    except Exception as error:  # noqa: BLE001 - a chart problem must not hide the figures
        report["errors"].append(f"chart: {type(error).__name__}: {error}")
        report["ok"] = False
        write_json(report, sc.out)
    print(summarize(report), flush=True)
    say(f"report {sc.out}, chart {sc.chart}")
    return status(report)


if __name__ == "__main__":
    sys.exit(main())
