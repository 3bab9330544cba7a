"""Unit tests for worker.observability.logging: structlog set-up and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import pytest
import structlog

from worker.observability.logging import MASK, Redactor, configure, settings_secrets
from worker.settings import load_settings

TOKEN = "s3cr3t-token"
SPARK_URL = f"sc://h:1/;token={TOKEN};use_ssl=true"
PASSWORD = "hunter2pass"
DSN = f"postgresql://u:{PASSWORD}@h/db"
NESTED = "n3sted-secret-value"
EXC_SECRET = "exc-secret-4242"
ALL_SECRETS = [TOKEN, PASSWORD, NESTED, EXC_SECRET]


@pytest.fixture(autouse=True)
def _logging_restored(restore_logging: None) -> None:
    """Every test here may call configure(): restored afterwards (tests/unit/conftest.py)."""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_") or name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name)
    return monkeypatch


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def assert_clean(text: str, secrets: list[str] = ALL_SECRETS) -> None:
    for secret in secrets:
        assert secret not in text, f"secret {secret!r} leaked:\n{text}"
    assert MASK in text


# --------------------------------------------------------------------------- structlog, JSON


def test_json_events_are_redacted() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=[TOKEN, PASSWORD, NESTED, EXC_SECRET])
    log = structlog.get_logger()
    log.info("spark_connect", url=SPARK_URL)
    log.info("pg_connect", dsn=DSN)
    log.info("nested", data={"a": [f"x {NESTED} y", (NESTED, 1)], "b": {"c": NESTED, "n": 3}})
    log.warning(f"the event text itself holds {NESTED}")
    structlog.contextvars.bind_contextvars(ctx=f"bound {TOKEN}")
    log.info("with_context")
    structlog.contextvars.clear_contextvars()
    try:
        raise RuntimeError(f"login failed with {EXC_SECRET} for {DSN}")
    except RuntimeError:
        log.exception("crashed", files=2)

    text = out.getvalue()
    events = json_lines(text)
    assert_clean(text)
    by_event = {e["event"]: e for e in events}
    assert by_event["spark_connect"]["url"] == f"sc://h:1/;token={MASK};use_ssl=true"
    assert by_event["pg_connect"]["dsn"] == f"postgresql://u:{MASK}@h/db"
    assert by_event["nested"]["data"] == {"a": [f"x {MASK} y", [MASK, 1]], "b": {"c": MASK, "n": 3}}
    assert f"the event text itself holds {MASK}" in by_event
    assert by_event["with_context"]["ctx"] == f"bound {MASK}"
    crash = by_event["crashed"]
    assert crash["level"] == "error"
    assert crash["files"] == 2
    assert "RuntimeError: login failed with *** for postgresql://u:***@h/db" in crash["exception"]
    assert "Traceback" in crash["exception"]
    for event in events:
        assert "timestamp" in event
        assert "level" in event


def test_json_values_of_other_types_survive() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=[TOKEN])
    structlog.get_logger().info("counts", n=3, ratio=0.5, ok=True, none=None, items=[1, 2])
    (event,) = json_lines(out.getvalue())
    assert event["n"] == 3
    assert event["ratio"] == 0.5
    assert event["ok"] is True
    assert event["none"] is None
    assert event["items"] == [1, 2]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect sc://h:15002/;token=abcdef123;use_ssl=true", "abcdef123"),
        ("TOKEN=abcdef123&x=1", "abcdef123"),
        ("dsn host=h password=pa55word dbname=x", "pa55word"),
        ('headers {"Authorization": "Bearer eyJhbGciOi.x.y"}', "eyJhbGciOi"),
        ("authorization=Bearer eyJhbGciOi.x.y", "eyJhbGciOi"),
        ("aws_secret_access_key = wJalrXUtnFEMIK7MDENG", "wJalrXUtnFEMIK7MDENG"),
        ("postgresql://user:pa55word@db:5432/x", "pa55word"),
        ("https://user:pa55word@proxy.internal/", "pa55word"),
    ],
)
def test_patterns_redact_unregistered_secrets(text: str, secret: str) -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out)
    structlog.get_logger().info("msg", detail=text)
    (event,) = json_lines(out.getvalue())
    assert secret not in event["detail"]
    assert MASK in event["detail"]


def test_level_filtering() -> None:
    out = io.StringIO()
    configure(fmt="json", level="WARNING", stream=out)
    log = structlog.get_logger()
    log.info("dropped")
    log.debug("dropped too")
    log.warning("kept")
    assert [e["event"] for e in json_lines(out.getvalue())] == ["kept"]


def test_auto_format_on_a_non_tty_is_json() -> None:
    out = io.StringIO()
    configure(fmt="auto", stream=out, secrets=[TOKEN])
    structlog.get_logger().info("hello", url=SPARK_URL)
    (event,) = json_lines(out.getvalue())
    assert event["url"] == f"sc://h:1/;token={MASK};use_ssl=true"


def test_non_string_values_are_redacted() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=[NESTED])
    structlog.get_logger().warning("write_failed", error=RuntimeError(f"denied for {NESTED}"), tags={NESTED})
    assert_clean(out.getvalue(), [NESTED])


# --------------------------------------------------------------------------- console


def test_console_format_is_redacted() -> None:
    out = io.StringIO()
    configure(fmt="console", stream=out, secrets=[TOKEN, PASSWORD, EXC_SECRET])
    log = structlog.get_logger()
    log.info("spark_connect", url=SPARK_URL, dsn=DSN)
    try:
        raise ValueError(f"bad {EXC_SECRET}")
    except ValueError:
        log.exception("crashed")
    text = out.getvalue()
    assert_clean(text, [TOKEN, PASSWORD, EXC_SECRET])
    assert "spark_connect" in text
    assert "token=***" in text
    assert "ValueError: bad ***" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    assert "\x1b[" not in text  # no colours


# --------------------------------------------------------------------------- stdlib logging


def test_stdlib_messages_are_redacted() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=[TOKEN])
    logging.getLogger("x").warning("password=abc123 while connecting")
    logging.getLogger("botocore").error("retrying %s with %s", SPARK_URL, {"k": TOKEN})
    logging.getLogger("x").info("below the root level")
    text = out.getvalue()
    assert "abc123" not in text
    assert TOKEN not in text
    assert "password=*** while connecting" in text
    assert "retrying sc://h:1/;token=***;use_ssl=true" in text
    assert "below the root level" not in text


def test_configure_replaces_root_handlers() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure(fmt="json", stream=first)
    configure(fmt="json", stream=second)
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("x").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


def test_stdlib_exception_traceback_is_redacted() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=[EXC_SECRET])
    try:
        raise RuntimeError(f"password=abc123 and {EXC_SECRET}")
    except RuntimeError:
        logging.getLogger("asyncio").exception("library failure")
    text = out.getvalue()
    assert "library failure" in text
    assert "abc123" not in text
    assert EXC_SECRET not in text


def test_json_format_stdlib_records_are_json_lines() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out)
    logging.getLogger("botocore").warning("connection pool is full")
    (record,) = json_lines(out.getvalue())
    assert record["event"] == "connection pool is full"
    assert record["logger"] == "botocore" and record["level"] == "warning"


# --------------------------------------------------------------------------- Redactor


def test_redactor_longest_secret_first() -> None:
    r = Redactor(["abcd", "abcdefgh"])
    assert r.scrub("x abcdefgh y abcd z") == "x *** y *** z"


def test_redactor_ignores_empty_and_short_secrets() -> None:
    r = Redactor(["", "ab", "abc"])
    assert r.scrub("ab abc") == "ab abc"


def test_redactor_add() -> None:
    r = Redactor()
    assert r.scrub("value s3cr3t") == "value s3cr3t"
    r.add("s3cr3t", "")
    assert r.scrub("value s3cr3t") == "value ***"


def test_configure_returns_the_live_redactor() -> None:
    out = io.StringIO()
    redactor = configure(fmt="json", stream=out)
    redactor.add("late-secret")
    structlog.get_logger().info("x", v="late-secret")
    assert "late-secret" not in out.getvalue()
    assert MASK in out.getvalue()


# --------------------------------------------------------------------------- settings_secrets


def test_settings_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_SPARK_URL", SPARK_URL)
    clean_env.setenv("ICEFEED_PG_DSN", DSN)
    secrets = settings_secrets(load_settings())
    assert TOKEN in secrets
    assert PASSWORD in secrets


def test_settings_secrets_dsn_password_parameter_and_aws(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_SPARK_URL", "sc://h:1/;use_ssl=true;token=tok-777;user_id=me")
    clean_env.setenv("ICEFEED_PG_DSN", "postgresql://h/db?user=u&password=qp-999&sslmode=require")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-555")
    clean_env.setenv("AWS_SESSION_TOKEN", "aws-session-666")
    secrets = settings_secrets(load_settings())
    assert set(secrets) >= {"tok-777", "qp-999", "aws-secret-555", "aws-session-666"}


def test_settings_secrets_defaults_have_none(clean_env: pytest.MonkeyPatch) -> None:
    assert settings_secrets(load_settings()) == []


def test_settings_secrets_feed_configure(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_SPARK_URL", SPARK_URL)
    clean_env.setenv("ICEFEED_PG_DSN", DSN)
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=settings_secrets(load_settings()))
    # the bare values, without any token=/user:pass@ context to match on
    structlog.get_logger().info("echo", a=f"bare {TOKEN}", b=f"bare {PASSWORD}")
    event = json_lines(out.getvalue())[0]
    assert event["a"] == f"bare {MASK}"
    assert event["b"] == f"bare {MASK}"
