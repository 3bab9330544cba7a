"""Snapshot files of whole results (tests/unit/snapshots/*.json): compare, or rewrite after a
deliberate change (each ``*_snapshot.py`` module does that when run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False))


def assert_matches(path: Path, actual: dict[str, Any]) -> None:
    """Case by case first, so a failure names the first case that differs."""
    expected = json.loads(path.read_text(encoding="utf-8"))
    actual = _plain(actual)
    for case in expected:
        assert actual.get(case) == expected[case], f"{path.name}: {case}"
    assert actual == expected, f"{path.name}: cases added or removed"


def write(path: Path, actual: dict[str, Any]) -> None:
    path.write_text(json.dumps(_plain(actual), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
