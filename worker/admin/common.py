"""Pieces every operator command shares: argument parsing (S3 URIs, --since), JSON-able rows,
the queue helpers (depths, the dead-letter queue behind a queue, sending notifications) and
operator-friendly error messages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from worker.adapters.pg_errors import timeouts_as_transient
from worker.adapters.pg_ledger import connect_pool
from worker.adapters.spark_sink import to_icefeed_error
from worker.domain.errors import ConfigError, IcefeedError, TransientError
from worker.domain.outcomes import TERMINAL
from worker.settings import Settings
from worker.sql import queries

T = TypeVar("T")

STATUSES = ("PENDING", "CLAIMED", "LOADED", "FAILED", "GONE", "SKIPPED", "QUARANTINED", "REJECTED", "REPLACED")
#: Statuses after which nothing more happens to a file on its own (a message about it is acked).
FINAL = TERMINAL
#: A PENDING file whose message has not come back for this long has probably lost it.
DEFAULT_STUCK_AFTER_S = 3600
SQS_BATCH = 10

_DURATION = re.compile(r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


class NotFound(ConfigError):
    error_class = "NotFound"


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
async def ledger(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the ledger for one command; a PostgreSQL time limit that fires inside is
    raised as its TransientError (PgStatementTimeout, PgLockTimeout, …)."""
    pool = await connect_pool(settings.pg)
    try:
        with timeouts_as_transient():
            yield pool
    finally:
        await pool.close()


# -- rows -----------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
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


def row(record: Any) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in dict(record).items()}


def dumps(result: dict[str, Any]) -> str:
    return orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


# -- AWS ------------------------------------------------------------------------------------


AWS_ERRORS = (BotoCoreError, ClientError, OSError)


def aws_error(exc: BaseException, what: str) -> IcefeedError:
    """A botocore failure as an icefeed error with a readable message."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in ("NoSuchBucket", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "404"):
            return NotFound(f"{what}: {code}: {message}")
        if code in ("AccessDenied", "AccessDeniedException", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return IcefeedError(f"{what}: access denied ({code}): {message}", error_class="AwsDenied")
        return TransientError(f"{what}: {code}: {message}", error_class="AwsUnavailable")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}", error_class="AwsUnavailable")


async def aws_call(op: Callable[[], Awaitable[T]], what: str) -> T:
    """One AWS call with a readable error (the client itself retries throttling)."""
    try:
        return await op()
    except AWS_ERRORS as exc:
        raise aws_error(exc, what) from None


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


async def queue_attributes(sqs: Any, url: str) -> dict[str, str]:
    async def op() -> dict[str, str]:
        response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        attrs: dict[str, str] = response.get("Attributes", {})
        return attrs

    return await aws_call(op, f"SQS GetQueueAttributes {queue_name(url)}")


def depth(attrs: dict[str, str]) -> dict[str, int]:
    return {
        "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


async def dead_letter_queue(sqs: Any, url: str, attrs: dict[str, str] | None = None) -> tuple[str, int] | None:
    """(DLQ URL, maxReceiveCount) from the queue's RedrivePolicy, or None without one."""
    attrs = attrs if attrs is not None else await queue_attributes(sqs, url)
    policy = attrs.get("RedrivePolicy")
    if not policy:
        return None
    parsed = orjson.loads(policy)
    arn = str(parsed["deadLetterTargetArn"])  # arn:aws:sqs:region:account:name
    parts = arn.split(":")
    if len(parts) < 6:
        raise ConfigError(f"queue {queue_name(url)}: unexpected deadLetterTargetArn {arn!r}")

    async def op() -> str:
        response = await sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
        return str(response["QueueUrl"])

    dlq = await aws_call(op, f"SQS GetQueueUrl {parts[5]}")
    return dlq, int(parsed.get("maxReceiveCount", 0))


async def send_bodies(sqs: Any, queue_url: str, bodies: list[str], delay_s: int = 0) -> None:
    """SendMessageBatch in tens; any entry SQS refuses is an error (nothing is silently lost)."""
    for i in range(0, len(bodies), SQS_BATCH):
        entries = [
            {"Id": str(n), "MessageBody": body, "DelaySeconds": delay_s}
            for n, body in enumerate(bodies[i : i + SQS_BATCH])
        ]

        async def op(e: list[dict[str, Any]] = entries) -> dict[str, Any]:
            result: dict[str, Any] = await sqs.send_message_batch(QueueUrl=queue_url, Entries=e)
            return result

        response = await aws_call(op, f"SQS SendMessageBatch {queue_name(queue_url)}")
        if response.get("Failed"):
            raise TransientError(
                f"SQS refused {len(response['Failed'])} message(s): {response['Failed'][0]}",
                error_class="AwsUnavailable",
            )


async def send_marked(pool: asyncpg.Pool, sqs: Any, queue_url: str, files: Sequence[Any], then: str | None) -> None:
    """Steps 2 and 3 of a re-queue (retry, backfill, schema approve): send the notifications of
    ``files``, which step 1 committed as PENDING with error_class 'Requeuing', then record the
    send (error_class ``then``; None clears the mark). No transaction is open meanwhile. If the
    send fails, the files stay marked and the error says how to finish the job."""
    if not files:
        return
    try:
        await send_bodies(sqs, queue_url, notifications(files))
    except IcefeedError as exc:
        raise TransientError(
            f"{exc}; {len(files)} file(s) are marked for re-queue (PENDING, Requeuing) without a confirmed"
            " notification: run `icefeed retry --failed` to send them",
            error_class=exc.error_class,
        ) from None
    await pool.execute(queries("operator.sql")["requeue_sent"], [f["id"] for f in files], then)


def notifications(files: Iterable[Any]) -> list[str]:
    """S3 notifications for ledger rows (bucket, key, etag, size_bytes)."""
    from worker.schema_admin import s3_notification

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
