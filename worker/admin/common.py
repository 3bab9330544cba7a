"""Pieces every operator command shares: argument parsing (S3 URIs, --since), the ledger and AWS
gateways of one command (``ledger``, ``aws``), JSON-able rows, queue depths, the send step of a
re-queue, and operator-friendly error messages. No client of its own: PostgreSQL goes through
``worker.adapters.pg_operator``, SQS through ``worker.adapters.sqs_admin``, S3 through
``S3Store``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from worker.adapters.aws import AwsClients, S3Store
from worker.adapters.pg_operator import OperatorLedger, operator_ledger
from worker.adapters.spark_sink import to_icefeed_error
from worker.adapters.sqs_admin import SqsAdmin
from worker.domain.errors import ConfigError, IcefeedError, TransientError
from worker.domain.outcomes import TERMINAL
from worker.settings import Settings

STATUSES = ("PENDING", "CLAIMED", "LOADED", "FAILED", "GONE", "SKIPPED", "QUARANTINED", "REJECTED", "REPLACED")
#: Statuses after which nothing more happens to a file on its own (a message about it is acked).
FINAL = TERMINAL
#: A PENDING file whose message has not come back for this long has probably lost it.
DEFAULT_STUCK_AFTER_S = 3600

_DURATION = re.compile(r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


# -- arguments ------------------------------------------------------------------------------


def parse_s3_uri(uri: str, *, key_required: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key). The key is taken as written (decoded, like the
    ``_source_file`` column), never percent-decoded again."""
    text = uri.strip()
    if not text.startswith("s3://"):
        raise ConfigError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = text[len("s3://") :].partition("/")
    if not bucket or not re.match(r"^[A-Za-z0-9][A-Za-z0-9.\-_]*$", bucket):
        raise ConfigError(f"not an S3 URI: {uri!r} (no valid bucket name)")
    if key_required and not key:
        raise ConfigError(f"{uri!r} names a bucket, not an object: expected s3://bucket/key")
    return bucket, key


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1w``, or combinations such as ``1h30m``."""
    match = _DURATION.match(text)
    if not match or not any(match.groups()) or not text.strip():
        raise ConfigError(f"not a duration: {text!r} (use e.g. 30m, 1h, 2d, 1h30m)")
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (UTC when it has no offset) or a duration back from ``now``."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value and value[0].isdigit() and ("-" in value or "T" in value or ":" in value):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--since: not an ISO-8601 time or a duration: {text!r}") from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    try:
        return now - parse_duration(value)
    except ConfigError:
        raise ConfigError(f"--since: not an ISO-8601 time or a duration (1h, 2d): {text!r}") from None


def parse_statuses(text: str) -> list[str]:
    """``failed`` or ``failed,quarantined`` (any case); ``open`` means PENDING and CLAIMED."""
    out: list[str] = []
    for part in re.split(r"[,\s|]+", text.strip()):
        if not part:
            continue
        name = part.upper()
        names = ["PENDING", "CLAIMED"] if name == "OPEN" else [name]
        for n in names:
            if n not in STATUSES:
                raise ConfigError(f"unknown status {part!r} (choose from {', '.join(s.lower() for s in STATUSES)})")
            if n not in out:
                out.append(n)
    if not out:
        raise ConfigError("--status: name at least one status")
    return out


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


# -- ledger ---------------------------------------------------------------------------------


@asynccontextmanager
async def ledger(settings: Settings) -> AsyncIterator[OperatorLedger]:
    """The operator's ledger for one command (a small pool, closed on exit); PostgreSQL failures
    inside are raised as icefeed errors (see ``worker.adapters.pg_operator``)."""
    async with operator_ledger(settings.pg) as found:
        yield found


@asynccontextmanager
async def aws(settings: Settings) -> AsyncIterator[tuple[SqsAdmin, S3Store]]:
    """The SQS gateway and the S3 store on clients of their own, closed on exit."""
    async with AwsClients(settings.aws) as clients:
        yield SqsAdmin(clients.sqs), S3Store(clients)


# -- rows -----------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A value as JSON can hold it: times in UTC ISO-8601, UUIDs and decimals as text, bytes as
    hex, JSON texts of the schema registry as what they hold."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def row(record: Any, json_columns: Iterable[str] = ()) -> dict[str, Any]:
    """A ledger row as a JSON-able dict; ``json_columns`` hold JSON texts, decoded."""
    decode = set(json_columns)
    return {k: orjson.loads(v) if k in decode and isinstance(v, str) else jsonable(v) for k, v in dict(record).items()}


def dumps(result: dict[str, Any]) -> str:
    return orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


# -- queues ---------------------------------------------------------------------------------


def depth(attrs: dict[str, str]) -> dict[str, int]:
    return {
        "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


async def send_marked(
    ledger: OperatorLedger, sqs: SqsAdmin, queue_url: str, files: Sequence[Any], then: str | None
) -> None:
    """Steps 2 and 3 of a re-queue (retry, backfill, schema approve): send the notifications of
    ``files``, which step 1 committed as PENDING with error_class 'Requeuing', then record the
    send (error_class ``then``; None clears the mark). No transaction is open meanwhile. If the
    send fails, the files stay marked and the error says how to finish the job."""
    if not files:
        return
    try:
        await sqs.send_bodies(queue_url, notifications(files))
    except IcefeedError as exc:
        raise TransientError(
            f"{exc}; {len(files)} file(s) are marked for re-queue (PENDING, Requeuing) without a confirmed"
            " notification: run `icefeed retry --failed` to send them",
            error_class=exc.error_class,
        ) from None
    await ledger.requeue_sent([f["id"] for f in files], then)


def notifications(files: Iterable[Any]) -> list[str]:
    """S3 notifications for ledger rows (bucket, key, etag, size_bytes)."""
    from worker.admin.schema import s3_notification

    return [s3_notification(f["bucket"], f["key"], f["etag"], f["size_bytes"]) for f in files]


# -- errors ---------------------------------------------------------------------------------


def spark_error(error: IcefeedError) -> IcefeedError:
    """The engine failure behind ``error``, classified in the one place that maps Spark Connect
    errors (``to_icefeed_error`` → ``classify_engine_error``)."""
    if error.error_class in ("SparkUnavailable", "SparkUnauthenticated") or error.__cause__ is None:
        return error
    cause = to_icefeed_error(error.__cause__)
    return cause if cause.error_class in ("SparkUnavailable", "SparkUnauthenticated") else error


def friendly(error: IcefeedError) -> str:
    """What went wrong, in one line an operator can act on."""
    detail = " ".join(str(error).split())
    grpc_details = re.search(r'details = "([^"]*)"', detail)
    if grpc_details:  # a raw gRPC error's repr: keep what the server said
        detail = f"{detail.split(':', 1)[0]}: {grpc_details.group(1)}"
    if len(detail) > 300:
        detail = detail[:299] + "…"
    cls = error.error_class
    if cls == "SparkUnavailable":
        return f"Spark Connect cluster unreachable (check ICEFEED_SPARK_URL and the cluster): {detail}"
    if cls == "SparkUnauthenticated":
        return "Spark Connect token rejected or expired: renew the token in ICEFEED_SPARK_URL"
    if cls == "SparkSessionLost":
        return f"Spark Connect session lost (the cluster restarted?); try again: {detail}"
    if cls in ("PgUnavailable", "PgConnectionLost"):
        return f"PostgreSQL unreachable (check ICEFEED_PG_DSN): {detail.removeprefix('PostgreSQL unreachable: ')}"
    if cls == "AwsUnavailable":
        return f"AWS unreachable or refusing the call: {detail}"
    if cls == "AwsDenied":
        return f"AWS denied the call (check the credentials and the role's policy): {detail}"
    return f"{cls}: {detail}" if cls not in ("ConfigError", "NotFound") else detail


def since_text(when: str | None, now: datetime) -> str:
    """``2026-11-22 00:51:58 (12 s ago)`` for an ISO time, ``—`` for none."""
    if not when:
        return "—"
    at = datetime.fromisoformat(when)
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({ago(now - at)} ago)"


def ago(delta: timedelta) -> str:
    s = max(0, int(delta.total_seconds()))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"
