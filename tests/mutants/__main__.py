"""``python -m tests.mutants``: run the quick mutant check (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest  # its exit codes: the tests themselves run in child interpreters

from tests.mutants import ROOT, PatchNotFound, patched
from tests.mutants.catalog import MUTANTS, Mutant

PYTEST = ("-x", "-q", "--no-header", "-p", "no:cacheprovider")


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    status: str  # killed | survived | error
    seconds: float
    detail: str


def pytest_run(args: list[str], timeout_s: float) -> tuple[int | None, str]:
    """(exit status, or None on timeout; the output's last lines)."""
    try:
        run = subprocess.run(
            [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout_s:.0f} s"
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    return run.returncode, "\n".join(lines[-15:])


def check(mutant: Mutant, timeout_s: float) -> Verdict:
    started = time.monotonic()
    code, output = pytest_run(["-m", "tests.mutants.hook", mutant.name, *PYTEST, *mutant.tests], timeout_s)
    seconds = time.monotonic() - started
    if code is None:  # a mutant that loops forever is caught too
        return Verdict(mutant, "killed", seconds, output)
    if code == pytest.ExitCode.TESTS_FAILED:
        failed = [line for line in output.splitlines() if line.startswith("FAILED")]
        return Verdict(mutant, "killed", seconds, failed[0] if failed else output.splitlines()[-1])
    if code == pytest.ExitCode.OK:
        return Verdict(mutant, "survived", seconds, output.splitlines()[-1] if output else "")
    return Verdict(mutant, "error", seconds, f"pytest exited {code}:\n{output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants")
    parser.add_argument("--only", default="", help="comma-separated mutant names")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant")
    parser.add_argument("--verbose", action="store_true", help="show the failing test of each killed mutant")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    wanted = [m for m in MUTANTS if not names or m.name in names]

    # Every patch must apply before anything runs: a mutant whose code moved is an error, not a pass.
    broken = []
    for m in wanted:
        try:
            patched((ROOT / m.path).read_text(encoding="utf-8"), m.old, m.new, f"{m.name} in {m.path}")
        except PatchNotFound as exc:
            broken.append(str(exc))
    if broken:
        print("\n".join(broken), "\nquick mutant check: FAILED (update tests/mutants/catalog.py)", sep="")
        return 1

    started = time.monotonic()
    files = sorted({f for m in wanted for f in m.tests})
    code, output = pytest_run(["-m", "pytest", *PYTEST, *files], args.timeout)
    if code != pytest.ExitCode.OK:
        print(f"the unmutated code fails its own tests (exit {code}):\n{output}\nquick mutant check: FAILED")
        return 1
    print(f"unmutated: {len(files)} test modules pass ({time.monotonic() - started:.1f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        verdicts = []
        for v in pool.map(lambda m: check(m, args.timeout), wanted):
            verdicts.append(v)
            mark = {"killed": "killed", "survived": "SURVIVED", "error": "ERROR"}[v.status]
            print(f"{v.mutant.name:<28} {mark:<8} {v.seconds:5.1f} s  {v.mutant.what}", flush=True)
            if v.status != "killed" or args.verbose:
                print("    " + v.detail.replace("\n", "\n    "), flush=True)
    killed = sum(v.status == "killed" for v in verdicts)
    elapsed = time.monotonic() - started
    verdict = "passed" if killed == len(verdicts) else "FAILED"
    print(f"quick mutant check: {killed} of {len(verdicts)} mutants killed in {elapsed:.0f} s — {verdict}")
    return 0 if killed == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
