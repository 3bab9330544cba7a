"""``python -m tests.sim``: run seeds of the fleet simulator (see docs/simulation.md).

python -m tests.sim --seeds 1000            # seeds 0..999, report failures
python -m tests.sim --seed 20               # one seed, with its whole trace
python -m tests.sim --seeds 500 --kinds crash,freeze
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tests.sim.world import FAULT_KINDS, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("--seeds", type=int, default=500, help="how many seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="run one seed and print its trace")
    parser.add_argument("--kinds", default=",".join(FAULT_KINDS), help="fault kinds to draw from")
    parser.add_argument("--show", type=int, default=3, help="failing seeds whose trace is printed")
    parser.add_argument("--first", action="store_true", help="stop at the first failing seed")
    parser.add_argument("--skip", default="", help="comma-separated seeds not to run (known failures)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    if args.seed is not None:
        result = simulate(args.seed, kinds)
        print(result.report() if not result.ok else result.report() + "\n  trace:\n" + result.trace)
        return 0 if result.ok else 1
    started = time.monotonic()
    failed = []
    faults: Counter[str] = Counter()
    skip = {int(s) for s in args.skip.split(",") if s}
    ran = 0
    for seed in range(args.start, args.start + args.seeds):
        if seed in skip:
            continue
        ran += 1
        result = simulate(seed, kinds)
        faults.update(result.fault_kinds)
        if not result.ok:
            failed.append(result)
            print(f"seed {seed}: FAILED: {'; '.join(result.violations)[:300]}", flush=True)
            if args.first:
                break
    elapsed = time.monotonic() - started
    for result in failed[: args.show]:
        print("\n" + result.report())
    mix = ", ".join(f"{k} {faults[k]}" for k in FAULT_KINDS if faults[k])
    print(
        f"\n{ran - len(failed)} of {ran} seeds passed (seeds {args.start}..{seed},"
        f" {elapsed:.1f} s); faults injected: {mix or 'none'}"
    )
    if failed:
        print("replay one: python -m tests.sim --seed " + str(failed[0].seed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
