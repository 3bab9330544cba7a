"""Named SQL blocks: ``-- name: x`` starts block x and runs until the next name."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        if match.group(1) in blocks:
            raise ValueError(f"duplicate SQL block name: {match.group(1)}")
        blocks[match.group(1)] = body
    return blocks


@cache
def queries(filename: str) -> dict[str, str]:
    return parse_blocks(resources.files(__package__).joinpath(filename).read_text(encoding="utf-8"))
