"""``python -m load run [--smoke] …`` (and ``history``, ``model``, ``profile``) — see load/README.md.
Exit status of ``run``: 0 all good, 1 rows lost or duplicated (or the ledger disagrees with the
table), 2 the run itself failed; ``history`` likewise (load/history.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from load.config import parser, scenario_from_args


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "profile":
        from load.profile import summarize

        print(summarize(args.raw, args.top))
        return 0
    if args.command == "model":
        from load.model import main as model_main

        return model_main(args)
    if args.command == "history":
        from load.history import main as history_main

        return history_main(args)
    try:
        sc = scenario_from_args(args)
    except ValueError as error:
        print(f"load: {error}", file=sys.stderr)
        return 2

    from load.bench import Bench
    from load.report import chart, summary, write_json

    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {message}", flush=True)

    say(f"icefeed load run, preset {sc.preset}: {sc.files} files per drain, K={sc.k}, phases {', '.join(sc.phases)}")
    try:
        report = Bench(sc, say).run()
    except Exception as error:  # noqa: BLE001 - the stack could not start etc.: say so, exit 2
        say(f"run failed: {type(error).__name__}: {error}")
        return 2
    write_json(report, sc.out)
    try:
        chart(report, sc.chart)
    except Exception as error:  # noqa: BLE001 - a chart problem must not hide the figures
        report["errors"].append(f"chart: {type(error).__name__}: {error}")
        report["ok"] = False
        write_json(report, sc.out)
    print(summary(report), flush=True)
    say(f"report {sc.out}, chart {sc.chart}")
    if report["errors"]:
        correct = all(report.get(k) == 0 for k in ("lost_files", "duplicated_rows"))
        return 2 if correct else 1
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
