"""Unit tests for the operator commands' pure helpers (worker/admin): argument parsing, error
messages, DLQ message descriptions, human rendering, and the operator.sql blocks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import grpc
import pytest
from pyspark.errors import RetriesExceeded
from pyspark.errors.exceptions.connect import SparkConnectGrpcException

from worker.adapters.spark_sink import reachable as _reachable
from worker.adapters.spark_sink import to_icefeed_error
from worker.admin import render
from worker.admin.cli import COMMANDS
from worker.admin.common import (
    friendly,
    jsonable,
    parse_duration,
    parse_s3_uri,
    parse_since,
    parse_statuses,
    spark_error,
)
from worker.admin.dlq import describe
from worker.admin.schema import s3_notification
from worker.domain.errors import BatchError, ConfigError, TransientError
from worker.routes import parse_routes
from worker.settings import REPO_ROOT
from worker.sql import queries

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ROUTES = parse_routes(
    """
[[ingestion]]
name = "events"
bucket = "land"
prefix = "events/"
suffix = ".json"
format = "json"
table = "glue.db.events"
location = "s3://wh/db/events"
"""
)

# --------------------------------------------------------------------------- S3 URIs


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://land/events/a.json", ("land", "events/a.json")),
        ("  s3://land/events/a b+c.json ", ("land", "events/a b+c.json")),  # taken as written
        ("s3://land/events/%2F.json", ("land", "events/%2F.json")),  # never decoded again
        ("s3://my.bucket-1/k", ("my.bucket-1", "k")),
        ("s3://land/deep/path/", ("land", "deep/path/")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["land/events/a.json", "s3:/land/a", "https://land/a", "s3://", "s3:///key", "s3://la nd/k"]
)
def test_parse_s3_uri_rejects(uri: str) -> None:
    with pytest.raises(ConfigError, match="not an S3 URI"):
        parse_s3_uri(uri)


def test_parse_s3_uri_prefix_and_bucket_only() -> None:
    assert parse_s3_uri("s3://land", key_required=False) == ("land", "")
    assert parse_s3_uri("s3://land/", key_required=False) == ("land", "")
    assert parse_s3_uri("s3://land/events/", key_required=False) == ("land", "events/")
    with pytest.raises(ConfigError, match="names a bucket, not an object"):
        parse_s3_uri("s3://land/")


# --------------------------------------------------------------------------- durations, --since


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1d 2h ", timedelta(days=1, hours=2)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1", "1x", "-1h", "1.5h", "1m1h", "soon"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T08:30:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-20T08:30:00Z", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
        ("2026-11-20T10:30:00+02:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
        ("2026-11-20 08:30", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    got = parse_since(text, NOW)
    assert got == expected
    assert got.tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "2026-11-20T25:00", "1 hour"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--since"):
        parse_since(text, NOW)


def test_parse_statuses() -> None:
    assert parse_statuses("failed") == ["FAILED"]
    assert parse_statuses("Failed, QUARANTINED") == ["FAILED", "QUARANTINED"]
    assert parse_statuses("failed|failed") == ["FAILED"]
    assert parse_statuses("open,loaded") == ["PENDING", "CLAIMED", "LOADED"]
    with pytest.raises(ConfigError, match="unknown status 'done'"):
        parse_statuses("loaded,done")
    with pytest.raises(ConfigError, match="at least one"):
        parse_statuses(" , ")


def test_jsonable() -> None:
    value = {
        "t": datetime(2026, 1, 1, 1, tzinfo=UTC),
        "u": UUID(int=1),
        "d": Decimal("1.50"),
        "b": b"\x01\xff",
        "n": [1, None, ("x",)],
        3: True,
    }
    assert jsonable(value) == {
        "t": "2026-01-01T01:00:00+00:00",
        "u": "00000000-0000-0000-0000-000000000001",
        "d": "1.50",
        "b": "01ff",
        "n": [1, None, ["x"]],
        "3": True,
    }


# --------------------------------------------------------------------------- errors


def test_friendly_messages() -> None:
    unavailable = TransientError("Spark Connect unavailable: connection refused", error_class="SparkUnavailable")
    assert friendly(unavailable).startswith("Spark Connect cluster unreachable")
    token = TransientError("Spark Connect token rejected or expired: bad", error_class="SparkUnauthenticated")
    assert friendly(token) == "Spark Connect token rejected or expired: renew the token in ICEFEED_SPARK_URL"
    pg = TransientError("PostgreSQL unreachable: OSError: refused", error_class="PgUnavailable")
    assert friendly(pg).startswith("PostgreSQL unreachable (check ICEFEED_PG_DSN)")
    assert friendly(ConfigError("--limit must be at least 1")) == "--limit must be at least 1"
    raw = (
        "Spark Connect unavailable: <_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAVAILABLE"
        ' details = "failed to connect to all addresses" debug_error_string = "x" >'
    )
    text = friendly(TransientError(raw, error_class="SparkUnavailable"))
    assert text.endswith("Spark Connect unavailable: failed to connect to all addresses")
    assert len(friendly(BatchError("x" * 1000, error_class="Boom"))) < 320


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def wrapped(exc: BaseException) -> BatchError:
    """As the sink raises it: the engine exception classified, chained as the cause."""
    error = to_icefeed_error(exc)
    error.__cause__ = exc
    assert isinstance(error, BatchError | TransientError)
    return error  # type: ignore[return-value]


def test_spark_error_finds_a_rejected_token_in_the_client_exception() -> None:
    # What pyspark raises for an RPC error without rich status: the gRPC status is only in the text.
    exc = SparkConnectGrpcException(
        "<_InactiveRpcError of RPC that terminated with:\n\tstatus = StatusCode.UNAUTHENTICATED\n"
        '\tdetails = "invalid token"\n>'
    )
    error = spark_error(wrapped(exc))
    assert error.error_class == "SparkUnauthenticated"
    assert friendly(error).startswith("Spark Connect token rejected or expired")


def test_spark_error_unwraps_retries_exceeded() -> None:
    retries = RetriesExceeded(errorClass="RETRIES_EXCEEDED", messageParameters={})
    retries.__cause__ = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    error = spark_error(wrapped(retries))
    assert error.error_class == "SparkUnavailable"
    assert "failed to connect" in str(error)
    alone = spark_error(wrapped(RetriesExceeded(errorClass="RETRIES_EXCEEDED", messageParameters={})))
    assert alone.error_class == "SparkUnavailable"


def test_spark_error_leaves_other_errors_alone() -> None:
    error = wrapped(ValueError("something else"))
    assert spark_error(error) is error
    unavailable = TransientError("x", error_class="SparkUnavailable")
    assert spark_error(unavailable) is unavailable


def test_unreachable_spark_is_reported_at_once() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TransientError, match=f"cannot connect to 127.0.0.1:{port}") as info:
            _reachable(f"sc://127.0.0.1:{port}/;token=abc", timeout_s=2)
    assert info.value.error_class == "SparkUnavailable"


# --------------------------------------------------------------------------- DLQ descriptions


def dlq_message(body: str, receives: int = 5) -> dict:
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "h",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": str(receives), "SentTimestamp": "1795000000000"},
    }


def full(key: str, etag: str, status: str, rows: int | None = None, error: str | None = None) -> dict:
    """A key_states row."""
    return {
        "bucket": "land",
        "key": key,
        "etag": etag,
        "status": status,
        "rows_loaded": rows,
        "error_class": error,
        "error_message": error and "why",
    }


def test_describe_a_message_whose_file_is_loaded_is_dropped() -> None:
    body = s3_notification("land", "events/a b.json", "e1", 10)
    states = {
        ("land", "events/a b.json"): [
            full("events/a b.json", "e0", "REPLACED"),
            full("events/a b.json", "e1", "LOADED", 3),
        ]
    }
    d = describe(dlq_message(body), ROUTES, states)
    assert d["action"] == "delete"
    assert d["receive_count"] == 5
    (f,) = d["files"]
    assert (f["uri"], f["status"], f["final"], f["state"]) == (
        "s3://land/events/a b.json",
        "LOADED",
        True,
        "LOADED (3 rows)",
    )


@pytest.mark.parametrize(
    ("rows", "action", "state_text"),
    [
        ([], "send", "not in the ledger"),
        ([full("events/a.json", "e1", "PENDING", error="DeadLettered")], "send", "PENDING (DeadLettered: why)"),
        ([full("events/a.json", "other", "LOADED", 1)], "send", "not in the ledger"),  # another version
        ([full("events/a.json", "e1", "FAILED", error="ParseError")], "delete", None),
        ([full("events/a.json", "e1", "QUARANTINED", error="SchemaConflict")], "delete", None),
    ],
)
def test_describe_sends_back_only_what_is_not_final(rows: list, action: str, state_text: str | None) -> None:
    body = s3_notification("land", "events/a.json", "e1", 10)
    d = describe(dlq_message(body), ROUTES, {("land", "events/a.json"): rows} if rows else {})
    assert d["action"] == action
    if state_text:
        assert d["files"][0]["state"] == state_text


def test_describe_failed_file_points_at_retry() -> None:
    body = s3_notification("land", "events/a.json", "e1", 10)
    d = describe(
        dlq_message(body), ROUTES, {("land", "events/a.json"): [full("events/a.json", "e1", "FAILED", error="X")]}
    )
    assert "icefeed retry" in d["files"][0]["state"]


def test_describe_unrouted_malformed_and_test_events() -> None:
    unrouted = describe(dlq_message(s3_notification("land", "other/a.csv", "e", 1)), ROUTES, {})
    assert unrouted["action"] == "delete" and unrouted["files"][0]["ingestion"] is None
    # Without a routes file every file counts as routed.
    assert describe(dlq_message(s3_notification("land", "other/a.csv", "e", 1)), None, {})["action"] == "send"
    junk = describe(dlq_message("not json"), ROUTES, {})
    assert junk["action"] == "send" and junk["notes"][0].startswith("malformed: body is not JSON")
    test_event = describe(
        dlq_message('{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "land"}'), ROUTES, {}
    )
    assert test_event["action"] == "delete" and test_event["notes"] == ["ignored: s3:TestEvent"]


def test_describe_event_without_etag_is_sent_back() -> None:
    body = s3_notification("land", "events/a.json", "", 10).replace('"eTag":""', '"eTag":null')
    d = describe(dlq_message(body), ROUTES, {("land", "events/a.json"): [full("events/a.json", "e1", "LOADED", 1)]})
    assert d["action"] == "send"


# --------------------------------------------------------------------------- rendering


def test_render_table_aligns() -> None:
    lines = render.table(["id", "name"], [[1, "a"], [100, None]], right=(0,))
    assert lines == [" id  name", "  1  a", "100"]


def test_render_status_and_files() -> None:
    status = {
        "now": NOW.isoformat(),
        "ledger_schema": "icefeed",
        "ingestion": None,
        "ingestions": [
            {
                "ingestion": "events",
                "files": 4,
                "by_status": {"LOADED": 2, "FAILED": 1, "GONE": 1},
                "rows_loaded": 5,
                "loaded_today": 2,
                "rows_today": 5,
                "last_loaded_at": (NOW - timedelta(seconds=30)).isoformat(),
            }
        ],
        "totals": {"files": 4, "by_status": {"LOADED": 2, "FAILED": 1, "GONE": 1}, "rows_today": 5},
        "oldest_open": None,
        "stuck_pending": 0,
        "stuck_after_s": 3600,
        "batches": {"writing": 0, "lease_expired": 0, "aborted_last_day": 0, "last_commit_at": None},
        "open_proposals": 0,
        "rejected_messages_last_day": 0,
        "queues": [{"name": "q", "visible": 1, "in_flight": 0, "delayed": 0, "dlq": None}],
        "attention": ["1 FAILED file(s): icefeed files --status failed"],
    }
    text = render.status(status)
    assert re.search(r"events\s+2\s+0\s+0\s+1\s+0\s+1\s+5\s+2026-11-22 11:59:30 \(30 s ago\)", text)
    assert "needs attention:\n  - 1 FAILED file(s)" in text
    assert "dead-letter queue: none" in text
    listing = {"files": [], "total": 0}
    assert render.files(listing) == "no files match"


def test_commands_are_registered_on_the_cli() -> None:
    from worker.__main__ import _parser

    parser = _parser()
    for argv in (
        ["status", "--json"],
        ["files", "--status", "failed", "--since", "1h"],
        ["file", "s3://b/k"],
        ["retry", "--failed", "--ingestion", "events"],
        ["backfill", "s3://b/p/", "--dry-run"],
        ["dlq", "show", "--max", "3"],
        ["dlq", "redrive"],
        ["preview", "s3://b/k", "--ingestion", "events"],
    ):
        assert parser.parse_args(argv).command in COMMANDS


# --------------------------------------------------------------------------- operator.sql


def test_operator_sql_blocks_the_code_uses_exist() -> None:
    """operator.sql is run by the operator-ledger adapter, plus the demo (by block name) and the
    load harness (its clean-up)."""
    blocks = queries("operator.sql")
    paths = [REPO_ROOT / "worker" / "adapters" / "pg_operator.py", REPO_ROOT / "worker" / "demo.py"]
    source = "\n".join(p.read_text() for p in [*paths, REPO_ROOT / "load" / "ledger.py"])
    used = set(re.findall(r'queries\("operator\.sql"\)\["([a-z_0-9]+)"\]', source))
    used |= set(re.findall(r'self\._q\["([a-z_0-9]+)"\]', source))
    used |= set(re.findall(r'\b_sql\([^()]*"([a-z_0-9]+)"\)', source))
    assert used, "no lookups found: the patterns are stale"
    assert used <= set(blocks), sorted(used - set(blocks))
    assert set(blocks) <= used, f"unused blocks: {sorted(set(blocks) - used)}"
    ledger = set(re.findall(r'queries\("ledger\.sql"\)\["([a-z_0-9]+)"\]', source))
    ledger |= set(re.findall(r'self\._ledger_q\["([a-z_0-9]+)"\]', source))
    assert ledger <= set(queries("ledger.sql"))


def test_operator_sql_takes_parameters_never_formatting() -> None:
    for name, body in queries("operator.sql").items():
        code = re.sub(r"'(?:[^']|'')*'", "''", body)
        assert "{" not in code and "}" not in code and "%s" not in code, name


def test_operator_code_holds_no_sql() -> None:
    others = [REPO_ROOT / "worker" / "demo.py", REPO_ROOT / "load" / "ledger.py"]
    for path in [*Path(REPO_ROOT / "worker" / "admin").glob("*.py"), *others]:
        text = path.read_text()
        assert not re.search(r"\b(SELECT|UPDATE|INSERT INTO|DELETE FROM)\b\s", text), path.name
