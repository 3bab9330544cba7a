"""What a test does when something it needs is missing from the machine: skip on a developer's
machine (``-rs`` prints the reason), FAIL where ``CI=true`` — a CI machine without Java must not
turn green while testing less."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a tier that cannot run fails instead of skipping)", pytrace=False)
    pytest.skip(reason)
