"""SQS message source and S3 object store on aioboto3 (one session, long-lived clients)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, TypeVar

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from worker.adapters.aws_errors import AWS_ERRORS, aws_call, aws_error
from worker.adapters.sqs_admin import SqsAdmin
from worker.domain.errors import TransientError
from worker.ports import Message, ObjectInfo
from worker.settings import AwsSettings

T = TypeVar("T")
THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "KMS.ThrottlingException",
}
SQS_BATCH = 10


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "") in THROTTLING
    return isinstance(exc, BotoCoreError | OSError)


async def _retry(op: Callable[[], Awaitable[T]], what: str) -> T:
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                return await op()
    except (BotoCoreError, ClientError, OSError) as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}", error_class="AwsUnavailable") from None
    raise AssertionError("unreachable")


class AwsClients:
    """Owns the aioboto3 clients for the worker's lifetime: ``async with AwsClients(...) as aws``."""

    def __init__(self, settings: AwsSettings, max_pool: int = 50) -> None:
        self._settings = settings
        self._stack = AsyncExitStack()
        self._config = Config(
            region_name=settings.region,
            max_pool_connections=max_pool,
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=30,
        )
        self.sqs: Any = None
        self.s3: Any = None

    async def __aenter__(self) -> AwsClients:
        session = aioboto3.Session()
        kwargs: dict[str, Any] = {"config": self._config, "region_name": self._settings.region}
        if self._settings.endpoint_url:
            kwargs["endpoint_url"] = self._settings.endpoint_url
        self.sqs = await self._stack.enter_async_context(session.client("sqs", **kwargs))
        self.s3 = await self._stack.enter_async_context(session.client("s3", **kwargs))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


class SqsSource:
    def __init__(self, clients: AwsClients) -> None:
        self._c = clients
        self.calls: Counter[str] = Counter()  # SQS API requests by operation (cost per file)

    async def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int) -> list[Message]:
        async def op() -> dict[str, Any]:
            self.calls["ReceiveMessage"] += 1
            result: dict[str, Any] = await self._c.sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
            return result

        response = await _retry(op, "SQS ReceiveMessage")
        messages = []
        for raw in response.get("Messages", []):
            attrs = raw.get("Attributes", {})
            sent = attrs.get("SentTimestamp")
            messages.append(
                Message(
                    queue_url=queue_url,
                    message_id=raw["MessageId"],
                    receipt_handle=raw["ReceiptHandle"],
                    body=raw.get("Body", ""),
                    receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
                    sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
                )
            )
        return messages

    async def delete(self, messages: list[Message]) -> list[Message]:
        """Delete in batches of 10; returns the messages SQS reported as failed."""
        failed: list[Message] = []
        for queue_url, chunk in _chunks(messages):
            by_id = {str(i): m for i, m in enumerate(chunk)}
            entries = [{"Id": i, "ReceiptHandle": m.receipt_handle} for i, m in by_id.items()]

            async def op(q: str = queue_url, e: list[dict[str, str]] = entries) -> dict[str, Any]:
                self.calls["DeleteMessageBatch"] += 1
                result: dict[str, Any] = await self._c.sqs.delete_message_batch(QueueUrl=q, Entries=e)
                return result

            response = await _retry(op, "SQS DeleteMessageBatch")
            failed.extend(by_id[f["Id"]] for f in response.get("Failed", []))
        return failed

    async def change_visibility(self, entries: list[tuple[Message, int]]) -> list[Message]:
        failed: list[Message] = []
        timeouts = {id(m): t for m, t in entries}
        for queue_url, chunk in _chunks([m for m, _ in entries]):
            by_id = {str(i): m for i, m in enumerate(chunk)}
            batch = [
                {"Id": i, "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeouts[id(m)]}
                for i, m in by_id.items()
            ]

            async def op(q: str = queue_url, e: list[dict[str, Any]] = batch) -> dict[str, Any]:
                self.calls["ChangeMessageVisibilityBatch"] += 1
                result: dict[str, Any] = await self._c.sqs.change_message_visibility_batch(QueueUrl=q, Entries=e)
                return result

            response = await _retry(op, "SQS ChangeMessageVisibilityBatch")
            failed.extend(by_id[f["Id"]] for f in response.get("Failed", []))
        return failed

    async def resend(self, message: Message, delay_s: int) -> None:
        """Send ``message``'s body again as a new message (receive count 0), after ``delay_s``
        seconds (SQS allows at most 900)."""

        async def op() -> dict[str, Any]:
            self.calls["SendMessage"] += 1
            result: dict[str, Any] = await self._c.sqs.send_message(
                QueueUrl=message.queue_url, MessageBody=message.body, DelaySeconds=max(0, min(delay_s, 900))
            )
            return result

        await _retry(op, "SQS SendMessage")

    async def max_receive_count(self, queue_url: str) -> int | None:
        """The queue's redrive maxReceiveCount, or None without a DLQ (errors as IcefeedErrors)."""
        return await SqsAdmin(self._c.sqs).max_receive_count(queue_url)


class S3Store:
    def __init__(self, clients: AwsClients) -> None:
        self._c = clients

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        async def op() -> ObjectInfo | None:
            try:
                response = await self._c.s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return ObjectInfo(size=int(response["ContentLength"]), etag=normalize_etag(response["ETag"]))

        try:
            return await _retry(op, f"S3 HeadObject s3://{bucket}/{key}")
        except ClientError as exc:  # 403 and other permanent answers
            raise TransientError(f"S3 HeadObject s3://{bucket}/{key}: {exc}", error_class="S3Denied") from None

    async def get(self, bucket: str, key: str, etag: str) -> bytes | None:
        """The object's bytes if it still has ``etag`` (If-Match); None if it is gone or changed."""

        async def op() -> bytes | None:
            try:
                response = await self._c.s3.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchKey", "NotFound", "PreconditionFailed", "412"):
                    return None
                raise
            async with response["Body"] as stream:
                data: bytes = await stream.read()
            return data

        try:
            return await _retry(op, f"S3 GetObject s3://{bucket}/{key}")
        except ClientError as exc:
            raise TransientError(f"S3 GetObject s3://{bucket}/{key}: {exc}", error_class="S3Denied") from None

    async def write(self, bucket: str, key: str, body: bytes) -> None:
        """PutObject (overwrites): the bad records of a quarantining route's file."""

        async def op() -> None:
            await self._c.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")

        try:
            await _retry(op, f"S3 PutObject s3://{bucket}/{key}")
        except ClientError as exc:
            raise TransientError(f"S3 PutObject s3://{bucket}/{key}: {exc}", error_class="S3Denied") from None

    async def list_pages(self, bucket: str, prefix: str) -> AsyncIterator[list[dict[str, Any]]]:
        """ListObjectsV2 under ``prefix``, one page of objects (Key, ETag, Size, LastModified) at a
        time; failures as icefeed errors (NotFound, AwsDenied, AwsUnavailable)."""
        pages = self._c.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix).__aiter__()
        while True:
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return
            except AWS_ERRORS as exc:
                raise aws_error(exc, f"S3 ListObjectsV2 s3://{bucket}/{prefix}") from None
            yield page.get("Contents", [])

    async def queue_notifications(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's notification configurations to SQS queues (QueueConfigurations)."""

        async def op() -> list[dict[str, Any]]:
            response = await self._c.s3.get_bucket_notification_configuration(Bucket=bucket)
            configs: list[dict[str, Any]] = response.get("QueueConfigurations", [])
            return configs

        return await aws_call(op, f"S3 GetBucketNotificationConfiguration {bucket}")


def normalize_etag(etag: str) -> str:
    return etag.strip().strip('"')


def _chunks(messages: list[Message]) -> list[tuple[str, list[Message]]]:
    by_queue: dict[str, list[Message]] = {}
    for m in messages:
        by_queue.setdefault(m.queue_url, []).append(m)
    return [(q, items[i : i + SQS_BATCH]) for q, items in by_queue.items() for i in range(0, len(items), SQS_BATCH)]
