"""Run pytest with one mutant applied in memory: ``python -m tests.mutants.hook NAME PYTEST_ARGS…``.

An import hook placed first on ``sys.meta_path`` serves the mutant's module from the patched
source (under the real file name, so tracebacks and ``__file__`` stay true); every other module is
imported as usual. The exit status is pytest's."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

import pytest

from tests.mutants import ROOT, patched
from tests.mutants.catalog import MUTANTS, Mutant


class PatchedSource(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, mutant: Mutant) -> None:
        self.module = mutant.module
        self.origin = ROOT / mutant.path
        self.source = patched(self.origin.read_text(encoding="utf-8"), mutant.old, mutant.new, mutant.name)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.module:
            return None
        return importlib.util.spec_from_file_location(fullname, self.origin, loader=self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.source, str(self.origin), "exec"), module.__dict__)


def main(argv: list[str]) -> int:
    (mutant,) = [m for m in MUTANTS if m.name == argv[0]]
    if mutant.module in sys.modules:
        raise SystemExit(f"{mutant.module} was imported before the mutant could be applied")
    sys.meta_path.insert(0, PatchedSource(mutant))
    return int(pytest.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
