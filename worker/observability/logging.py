"""structlog set-up: JSON lines in production, readable lines in a terminal, secrets redacted.

Every secret a worker is given (see ``settings_secrets``) is registered once, at start, in one
``Redactor``; it masks them, and anything that looks like a credential, in every log event (the
last structlog processor, and a filter on stdlib records), in CLI output and errors, in the texts
the ledger stores, and in the /readyz and /metrics bodies.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

import orjson
import structlog

MASK = "***"
#: Shorter values are not registered (masking them would mask ordinary words).
MIN_SECRET_LENGTH = 4
_PATTERNS = (
    re.compile(r"(?i)(token=)[^;&\s'\"]+"),
    re.compile(r"(?i)(password=)[^;&\s'\"]+"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)[^\s'\",}]+"),
    re.compile(r"(?i)(aws_secret_access_key[\"']?\s*[:=]\s*[\"']?)[^\s'\",}]+"),
    # a catalog property or header shown as a mapping: 's3.secret-access-key': 'value'
    re.compile(r"(?i)([\w.-]*(?:secret|password|credential|token)[\w.-]*[\"']\s*:\s*[\"'])[^'\"]+"),
    re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+(@)"),
)

#: Spark Connect URL parameters the client itself reads and that carry no credential. Every other
#: ``;name=value`` (``token``, and whatever a gateway wants, which the client sends as a gRPC
#: header) is a secret.
SPARK_PLAIN_PARAMETERS = frozenset({"use_ssl", "user_id", "user_agent", "session_id"})
#: Names of PostgreSQL DSN parameters that hold a credential (password, sslpassword, …).
_PG_SECRET_NAME = re.compile(r"(?i)password|secret|token")
#: Names of Iceberg catalog properties that hold a credential (keys, secrets, tokens, …);
#: ``header.*`` properties (sent to a REST catalog as HTTP headers) are secrets too.
_CATALOG_SECRET_NAME = re.compile(r"(?i)secret|password|passwd|token|credential|key|auth|signature|^header\.")
#: Credentials a worker can be given through its environment rather than its settings.
SECRET_ENVIRONMENT = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "SPARK_CONNECT_AUTHENTICATE_TOKEN",
    "PGPASSWORD",
)


def _spellings(secret: str) -> Iterator[str]:
    """A secret as it can appear in text: as given, URL-(de)coded, escaped in JSON, in a
    Python repr or in a Prometheus label value."""
    yield secret
    yield unquote(secret)
    yield unquote_plus(secret)
    yield quote(secret, safe="")
    yield quote_plus(secret, safe="")
    yield json.dumps(secret)[1:-1]
    yield json.dumps(secret, ensure_ascii=False)[1:-1]
    yield repr(secret)[1:-1]
    yield secret.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Redactor:
    """Masks registered secrets (in every spelling) and credential-looking text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_LENGTH:
                self._secrets.update(s for s in _spellings(secret) if len(s) >= MIN_SECRET_LENGTH)
        ordered = sorted(self._secrets, key=len, reverse=True)  # the longest spelling wins
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def scrub(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        for pattern in _PATTERNS:
            text = pattern.sub(
                lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex and m.lastindex >= 2 else ""), text
            )
        return text

    def redact(self, value: Any) -> Any:
        """``value`` with every string in it scrubbed (dicts, lists and tuples walked)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self.redact(v) for v in value)
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)  # exceptions, UUIDs, paths …: rendered later; scrub what they say now
        scrubbed = self.scrub(text)
        return value if scrubbed == text else scrubbed

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = self.redact(event[key])
        return event


def configure(
    fmt: str = "auto", level: str = "INFO", secrets: Iterable[str] | Redactor = (), stream: Any = None
) -> Redactor:
    """Configure structlog (and stdlib logging, for library messages) once, in ``__main__``.

    Uncaught exceptions (of the main thread and of other threads) are logged through the
    redactor too, never printed raw."""
    stream = stream or sys.stderr
    redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)
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
    # Library records are scrubbed as they are made, so that handlers of their own (pyspark's
    # Spark Connect logger has one, turned on by SPARK_CONNECT_LOG_LEVEL) never see a secret.
    logging.setLogRecordFactory(_ScrubbedRecords(redactor, logging.getLogRecordFactory()))
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return redactor


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    structlog.get_logger("icefeed").error("exception_uncaught", exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    structlog.get_logger("icefeed").error(
        "exception_uncaught",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


class _ScrubbedRecords:
    """A log record factory: the message (arguments merged) and the traceback scrubbed."""

    def __init__(self, redactor: Redactor, factory: Callable[..., logging.LogRecord]) -> None:
        self._r = redactor
        self.base: Callable[..., logging.LogRecord] = factory.base if isinstance(factory, _ScrubbedRecords) else factory

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: show both
            message = f"{record.msg} {record.args!r}"
        record.msg = self._r.scrub(message)
        record.args = None
        if record.exc_info:
            record.exc_text = self._r.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record


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


# --------------------------------------------------------------------------- what is a secret


def settings_secrets(settings: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value reachable from the settings and the environment, to be masked wherever
    it appears: the Spark Connect URL's token and header parameters (and a password in it), the
    PostgreSQL DSN's password and password-like parameters, the Iceberg catalog's credential
    properties, and the credentials the AWS, Spark Connect and PostgreSQL clients read from the
    environment."""
    environ = os.environ if environ is None else environ
    found = spark_url_secrets(settings.spark.url.get_secret_value())
    found += dsn_secrets(settings.pg.dsn.get_secret_value())
    found += catalog_secrets(settings.iceberg.catalog)
    found += [environ[name] for name in SECRET_ENVIRONMENT if environ.get(name)]
    return [s for s in dict.fromkeys(found) if s]


def spark_url_secrets(url: str) -> list[str]:
    """``sc://[user:password@]host:port/;name=value;…``: the password and every parameter value
    except the plain ones (use_ssl, user_id, user_agent, session_id)."""
    rest = url.removeprefix("sc://")
    netloc, _, params = rest.partition("/")
    netloc = netloc.split(";", 1)[0]
    found = _userinfo_password(netloc)
    for part in params.split(";"):
        name, equals, value = part.partition("=")
        if equals and name.strip().lower() not in SPARK_PLAIN_PARAMETERS:
            found.append(value)
    return found


def dsn_secrets(dsn: str) -> list[str]:
    """A PostgreSQL DSN's password (``user:password@``) and the values of its password-like
    parameters (``?password=…&sslpassword=…``, or ``password=…`` in the key=value form)."""
    found: list[str] = []
    if "://" in dsn:
        parts = urlsplit(dsn)
        found += _userinfo_password(parts.netloc)
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _PG_SECRET_NAME.search(k)]
    else:
        found += [v for k, v in re.findall(r"(\w+)\s*=\s*'?([^\s']+)", dsn) if _PG_SECRET_NAME.search(k)]
    return found


def catalog_secrets(properties: Mapping[str, str]) -> list[str]:
    """Iceberg catalog properties that hold credentials (``*key*``, ``*secret*``, ``*token*``,
    ``credential`` — also its secret half after ``:`` —, ``header.*``), and a password in any
    property that is a URL."""
    found: list[str] = []
    for name, value in properties.items():
        if _CATALOG_SECRET_NAME.search(name):
            found.append(value)
            if "credential" in name.lower() and ":" in value:
                found.append(value.split(":", 1)[1])
        if "://" in value:
            found += _userinfo_password(urlsplit(value).netloc)
    return found


def _userinfo_password(netloc: str) -> list[str]:
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return []
    _, colon, password = userinfo.partition(":")
    return [password] if colon and password else []
