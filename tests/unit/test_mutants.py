"""The quick mutant check's own parts (tests/mutants): every mutant still applies to the code as
it is, and the import hook serves the patched source."""

from __future__ import annotations

import importlib.util

import pytest

from tests.mutants import ROOT, PatchNotFound, patched
from tests.mutants.catalog import MUTANTS
from tests.mutants.hook import PatchedSource
from worker.domain.batching import BatchLimits, FileWork


def test_the_catalog_has_about_twenty_distinct_mutants_with_existing_tests() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) and len(names) >= 20
    for m in MUTANTS:
        assert m.old != m.new, m.name
        assert m.tests and all((ROOT / t).is_file() and t.startswith("tests/unit/") for t in m.tests), m.name


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_applies_to_the_code_exactly_once(mutant) -> None:  # type: ignore[no-untyped-def]
    source = (ROOT / mutant.path).read_text(encoding="utf-8")
    assert patched(source, mutant.old, mutant.new, mutant.name) != source


def test_a_patch_whose_text_moved_fails_loudly() -> None:
    with pytest.raises(PatchNotFound, match="found 0 times"):
        patched("a = 1\n", "b = 2", "b = 3", "gone")
    with pytest.raises(PatchNotFound, match="found 2 times"):
        patched("x\nx\n", "x", "y", "twice")


def test_the_hook_serves_the_patched_module_and_nothing_else() -> None:
    (mutant,) = [m for m in MUTANTS if m.name == "batch-max-bytes-exclusive"]
    hook = PatchedSource(mutant)
    assert hook.find_spec("worker.domain.events", None) is None
    spec = hook.find_spec("worker.domain.batching", None)
    assert spec is not None and spec.origin == str(ROOT / "worker/domain/batching.py")
    module = importlib.util.module_from_spec(spec)  # a fresh module: the imported one is untouched
    hook.exec_module(module)
    buffer = module.BatchBuffer(BatchLimits(max_files=10, max_bytes=100, max_wait_s=1.0))
    for file_id, size in ((1, 60), (2, 40)):
        buffer.add(FileWork(file_id, "o", "b", f"{file_id}.json", "e", size), now=0.0)
    assert [f.file_id for f in buffer.take(0.0)] == [1]  # the mutant: 60 + 40 no longer fits in 100
