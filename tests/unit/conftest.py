"""Fixtures shared by unit tests."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() replaces structlog's config, the root logger's handlers, the record factory
    and the exception hooks: put them all back (for tests that call it)."""
    root = logging.getLogger()
    handlers, level, factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    hooks = sys.excepthook, threading.excepthook
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    sys.excepthook, threading.excepthook = hooks


def icefeed_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Only these ICEFEED_* settings (``sqs_max_in_flight="40"`` sets ICEFEED_SQS_MAX_IN_FLIGHT):
    every other ICEFEED_* variable of the environment is removed for the test."""
    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_"):
            monkeypatch.delenv(name)
    for key, value in values.items():
        monkeypatch.setenv(f"ICEFEED_{key.upper()}", value)
