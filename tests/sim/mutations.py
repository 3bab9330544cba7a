"""Mutation check of the fence (issue 12): each mutation removes one fencing step from a copy of
the code; the simulator must then fail within the ``make test`` budget of seeds.

    python -m tests.sim.mutations                 # every mutation, 500 seeds each
    python -m tests.sim.mutations --only audit --seeds 2000

A mutation is a textual patch (the exact text must be found once, so a change to the code that
moves it makes this script say so instead of silently testing nothing).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mutants import patched

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    # Further (path, old, new) patches applied with this one: a step another step makes redundant
    # is checked with that other step removed too, to show the simulator reaches what it guards.
    also: tuple[tuple[str, str, str], ...] = ()


_NO_WRITER_LEASE_CHECK = (
    "worker/pipeline.py",
    '            blog.warning("table_lock_lost", during="append", hint="the writer slot kept other writers out")\n'
    "        if not await self._still_mine(batch_id, blog):",
    '            blog.warning("table_lock_lost", during="append", hint="the writer slot kept other writers out")\n'
    "        if False:",
)


MUTATIONS = (
    Mutation(
        "lease-recheck",
        "the fence's lease check is ignored: a batch taken over still appends",
        "worker/pipeline.py",
        "                        if fence.ok:\n",
        '                        if fence.ok or fence.reason == "lease_lost":\n',
    ),
    Mutation(
        "writer-slot",
        "the writer slot is ignored: an append starts while the previous writer may still append",
        "worker/pipeline.py",
        "                        if fence.ok:\n",
        '                        if fence.ok or fence.reason == "writer_busy":\n',
    ),
    Mutation(
        "lock-before-append",
        "no check that the table lock is still held right before the append",
        "worker/pipeline.py",
        "        if not await lock.held():  # narrows the window",
        "        if False:  # narrows the window",
    ),
    Mutation(
        "lock-before-probe",
        "recovery stops, probes and releases without holding the table lock",
        "worker/pipeline.py",
        "            async with self.ledger.table_lock(table, self.settings.lease.recovery_lock_wait_s):\n"
        "                if not await self.sink.stop(work.session_id, table):",
        "            async with contextlib.nullcontext():\n"
        "                if not await self.sink.stop(work.session_id, table):",
    ),
    Mutation(
        "stop-before-release",
        "recovery releases a fenced batch without stopping its engine session first",
        "worker/pipeline.py",
        "                if not await self.sink.stop(work.session_id, table):",
        "                if False:",
    ),
    Mutation(
        "wait-out-unconfirmed-stop",
        "recovery releases at once when the engine cannot confirm the stop",
        "worker/pipeline.py",
        "                    if (work.started_s_ago or 0.0) < limit:",
        "                    if False:",
    ),
    Mutation(
        "stop-after-failed-write",
        "a failed append is probed and released without stopping its session",
        "worker/pipeline.py",
        "        if not await self.sink.stop(session, table):",
        "        if False:",
    ),
    Mutation(
        "heartbeat-lease-loss",
        "the heartbeat ignores batches it no longer owns (their appends are not stopped)",
        "worker/pipeline.py",
        "        if lost:\n",
        "        if False:\n",
    ),
    Mutation(
        "audit",
        "the sweeper's audit of released batches is skipped",
        "worker/pipeline.py",
        "        for batch in await self.ledger.audit_candidates(self.settings.lease.audit_delay_s, limit):",
        "        for batch in []:",
    ),
    Mutation(
        "version-check",
        "rows of engine-read files whose object changed during the write are kept",
        "worker/pipeline.py",
        "        changed = await self._changed(by_path) if by_path else {}",
        "        changed = {}",
    ),
    Mutation(
        "replace-plan-under-lock",
        "replace: no plan under the table lock (older rows never deleted, superseded versions written)",
        "worker/pipeline.py",
        "        replacing, superseded = await self._replace_plan(claimed, settled)",
        "        replacing, superseded = set(), set()",
    ),
    Mutation(
        "lock-before-probe+writer-lease-check",
        "recovery without the table lock, and a writer that does not re-check its lease after the append",
        "worker/pipeline.py",
        "            async with self.ledger.table_lock(table, self.settings.lease.recovery_lock_wait_s):\n"
        "                if not await self.sink.stop(work.session_id, table):",
        "            async with contextlib.nullcontext():\n"
        "                if not await self.sink.stop(work.session_id, table):",
        also=(_NO_WRITER_LEASE_CHECK,),
    ),
    Mutation(
        "writer-lease-check",
        "a writer does not re-check its lease after the append (the recovery's table lock still orders them)",
        *_NO_WRITER_LEASE_CHECK,
    ),
    Mutation(
        "claim-serializes-keys",
        "claims do not skip a file whose key has another version in an open batch (ledger.sql claim)",
        "tests/sim/world.py",
        "FakeLedger(clock, serialize_keys=FENCED,",
        "FakeLedger(clock, serialize_keys=False,",
    ),
)


def mutated_copy(m: Mutation, into: Path) -> None:
    for part in ("worker", "tests"):
        shutil.copytree(ROOT / part, into / part, ignore=shutil.ignore_patterns("__pycache__"))
    for path, old, new in ((m.path, m.old, m.new), *m.also):
        target = into / path
        target.write_text(
            patched(target.read_text(encoding="utf-8"), old, new, f"{m.name} in {path}"), encoding="utf-8"
        )


def simulate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.sim", "--show", "0", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def baseline_failures(seeds: int) -> list[int]:
    """Seeds the unchanged code fails on (open findings): a mutant is caught only by others."""
    run = simulate(ROOT, "--seeds", str(seeds))
    return [int(line.split()[1].rstrip(":")) for line in run.stdout.splitlines() if line.startswith("seed ")]


def check(m: Mutation, seeds: int, skip: list[int]) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix=f"icefeed-mutant-{m.name}-") as tmp:
        mutated_copy(m, Path(tmp))
        run = simulate(Path(tmp), "--seeds", str(seeds), "--first", "--skip", ",".join(map(str, skip)))
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if run.returncode not in (0, 1):
        return False, f"the simulator crashed: {run.stderr.strip()[-400:]}"
    return run.returncode == 1, lines[0] if run.returncode == 1 else lines[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.mutations")
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--only", default="", help="comma-separated mutation names")
    args = parser.parse_args(argv)
    wanted = [m for m in MUTATIONS if not args.only or m.name in args.only.split(",")]
    skip = baseline_failures(args.seeds)
    print(
        f"the unchanged code fails {len(skip)} of {args.seeds} seeds ({', '.join(map(str, skip)) or 'none'}): skipped"
    )
    survivors = []
    for m in wanted:
        started = time.monotonic()
        caught, detail = check(m, args.seeds, skip)
        verdict = "caught" if caught else "SURVIVED"
        print(f"{m.name:<28} {verdict:<9} {time.monotonic() - started:5.1f} s  {m.what}\n{'':<39}{detail}", flush=True)
        if not caught:
            survivors.append(m.name)
    print(f"\n{len(wanted) - len(survivors)} of {len(wanted)} mutations caught within {args.seeds} seeds")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
