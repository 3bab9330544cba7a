"""The quick mutant check run by ``make test``: a fixed list of hand-picked mutants of the pure
core (and of the intake's sequencer rule), each of which the unit tests must kill.

    python -m tests.mutants                  # every mutant (about a minute on 2 cores)
    python -m tests.mutants --only strict-like-evolve,rescue-nullability

Each mutant is a textual patch of one module, applied in memory (an import hook serves the
patched source in place of the file) in a fresh interpreter that runs only the unit test modules
named for it, stopping at the first failure. A mutant is killed when those tests fail; it
survives when they pass. The text to change must be found exactly once: when the code moves, the
check fails loudly ("the text to change is found 0 times") instead of testing nothing.

The full mutation pass over the pure core is ``make mutate`` (mutmut; docs/testing.md).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class PatchNotFound(SystemExit):
    """The text a mutation changes is not in the code exactly once (the code moved)."""


def patched(text: str, old: str, new: str, where: str) -> str:
    """``text`` with ``old`` replaced by ``new``; ``old`` must occur exactly once in it."""
    count = text.count(old)
    if count != 1:
        raise PatchNotFound(f"mutation of {where}: the text to change is found {count} times")
    return text.replace(old, new)
