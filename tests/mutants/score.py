"""The mutation score of the last ``make mutate`` run, per area and per module, from the results
mutmut leaves in ``mutants/`` (``python -m tests.mutants.score``; ``--survivors`` lists them).

A mutant counts as killed when the unit tests failed on it or it ran past its time limit; every
other outcome (survived, no test reached it, suspicious) counts against the score.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from tests.mutants import ROOT

KILLED = {1, 3, 24, -24, 36, 152, 255}  # mutmut: tests failed, pytest internal error, timeouts
SURVIVED = {0}
NO_TESTS = {5, 33}
AREAS = (
    ("worker/domain/", "worker/domain/"),
    ("worker/routes.py", "worker/routes.py"),
    ("worker/settings.py", "worker/settings.py"),
    ("worker/adapters/dialects.py", "worker/adapters/dialects.py"),
)


def results(root: Path) -> dict[str, dict[str, int | None]]:
    """{source path: {mutant name: exit code}} for every mutated module."""
    out = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        source = meta.relative_to(root / "mutants").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        if codes:
            out[source] = codes
    return out


def changed_lines(name: str, path: str) -> list[str]:
    """The removed and added lines of one mutant (mutmut's own diff)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # the dev extra: only make mutate needs it

    diff = get_diff_for_mutant(name, path=path).splitlines()
    return [d for d in diff if d[:1] in "+-" and not d.startswith(("+++", "---"))]


def tally(codes: dict[str, int | None]) -> Counter[str]:
    c: Counter[str] = Counter()
    for code in codes.values():
        kind = (
            "killed"
            if code in KILLED
            else "survived"
            if code in SURVIVED
            else "no tests"
            if code in NO_TESTS
            else "other"
        )
        c[kind] += 1
    c["total"] = len(codes)
    return c


def line(name: str, c: Counter[str]) -> str:
    score = 100.0 * c["killed"] / c["total"] if c["total"] else 0.0
    counts = f"{c['total']:>5} {c['killed']:>6} {c['survived']:>8} {c['no tests']:>8} {c['other']:>5}"
    return f"{name:<34} {counts} {score:6.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants.score")
    parser.add_argument("--survivors", action="store_true", help="list every mutant not killed")
    parser.add_argument("--diffs", action="store_true", help="with --survivors: the lines each one changes")
    parser.add_argument("--min-domain", type=float, default=0.0, help="fail below this score on worker/domain/")
    args = parser.parse_args(argv)
    by_path = results(ROOT)
    if not by_path:
        print("no mutmut results under mutants/: run `make mutate` first")
        return 1
    print(f"{'module':<34} {'total':>5} {'killed':>6} {'survived':>8} {'no tests':>8} {'other':>5}  score")
    domain = Counter[str]()
    for area, prefix in AREAS:
        area_total: Counter[str] = Counter()
        for path, codes in by_path.items():
            if path.startswith(prefix):
                c = tally(codes)
                area_total.update(c)
                if prefix.endswith("/"):
                    print(line("  " + path.removeprefix(prefix), c))
        print(line(area, area_total))
        if area == "worker/domain/":
            domain = area_total
    if args.survivors:
        for path, codes in by_path.items():
            for name, code in sorted(codes.items()):
                if code not in KILLED:
                    print(f"{code!s:>4}  {name}")
                    if args.diffs:
                        print("".join(f"      {change}\n" for change in changed_lines(name, path)), end="")
    score = 100.0 * domain["killed"] / domain["total"] if domain["total"] else 0.0
    if score < args.min_domain:
        print(f"worker/domain/ scores {score:.1f} %, below {args.min_domain:.0f} %")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
