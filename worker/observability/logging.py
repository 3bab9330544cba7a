"""structlog set-up: JSON lines in production, readable lines in a terminal, secrets redacted.

Every event passes through ``Redactor`` last: values registered as secrets (Spark Connect URL
tokens, database passwords, AWS keys) and anything that looks like one are replaced.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

MASK = "***"
_PATTERNS = (
    re.compile(r"(?i)(token=)[^;&\s'\"]+"),
    re.compile(r"(?i)(password=)[^;&\s'\"]+"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)[^\s'\",}]+"),
    re.compile(r"(?i)(aws_secret_access_key[\"']?\s*[:=]\s*[\"']?)[^\s'\",}]+"),
    re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+(@)"),
)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        self._secrets = sorted(set(self._secrets) | {s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(
                lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex and m.lastindex >= 2 else ""), text
            )
        return text

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self._value(v) for v in value)
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)  # exceptions, UUIDs, paths …: rendered later; scrub what they say now
        scrubbed = self.scrub(text)
        return value if scrubbed == text else scrubbed

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = self._value(event[key])
        return event


def configure(fmt: str = "auto", level: str = "INFO", secrets: Iterable[str] = (), stream: Any = None) -> Redactor:
    """Configure structlog (and stdlib logging, for library messages) once, in ``__main__``."""
    stream = stream or sys.stderr
    redactor = Redactor(secrets)
    if fmt == "auto":
        fmt = "console" if hasattr(stream, "isatty") and stream.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.addFilter(_StdlibRedaction(redactor))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    return redactor


class _StdlibRedaction(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._r = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._r.scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self._r.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._r.scrub(record.exc_text)
        return True


class _JsonFormatter(logging.Formatter):
    """Library (stdlib) records as JSON lines, like structlog's own."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "event": record.getMessage(),
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
        }
        if record.exc_text:
            event["exception"] = record.exc_text
        return orjson.dumps(event).decode()


def settings_secrets(settings: Any) -> list[str]:
    """Every secret value reachable from the settings, to be masked wherever it appears."""
    found: list[str] = []
    url = settings.spark.url.get_secret_value()
    found += re.findall(r"(?i)token=([^;&]+)", url)
    dsn = settings.pg.dsn.get_secret_value()
    match = re.search(r"://[^:/@]+:([^@]+)@", dsn)
    if match:
        found.append(match.group(1))
    found += re.findall(r"(?i)password=([^\s&]+)", dsn)
    import os

    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(name):
            found.append(os.environ[name])
    return found
