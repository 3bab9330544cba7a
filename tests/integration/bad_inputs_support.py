"""Helpers for the bad-input matrix (test_bad_inputs.py): payload and event builders, the
settle loop, and a snapshot of everything the assertions look at (ledger, rejected messages,
Iceberg rows read with pyiceberg, parsed worker logs, queue depths, worker exit codes)."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from tests.harness import Env, poll

ACCOUNT = "123456789012"
FINAL = {"LOADED", "FAILED", "GONE", "SKIPPED", "QUARANTINED", "REJECTED"}


# -- payloads -----------------------------------------------------------------------------------


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def labelled(label: str, *ns: int) -> list[dict[str, Any]]:
    return [{"label": label, "n": n} for n in ns]


def truncated_gzip() -> bytes:
    """A real .json.gz of 200 varied lines, cut in half (mid deflate stream)."""
    rng = random.Random(29)
    body = jsonl(*({"label": "truncated_gzip", "n": i, "pad": rng.random()} for i in range(200)))
    data = gzip.compress(body, mtime=0)
    return data[: len(data) // 2]


def gzip_without_trailer() -> bytes:
    """A .json.gz whose deflate stream is whole but whose 8-byte CRC32/ISIZE trailer is missing."""
    return gzip.compress(jsonl(*({"label": "gzip_without_trailer", "n": i} for i in range(50))), mtime=0)[:-8]


def binary_garbage() -> bytes:
    return random.Random(6).randbytes(4096)


def deep_value(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    return value


def wide_row(columns: int) -> dict[str, Any]:
    row: dict[str, Any] = {"label": "wide", "n": 0}
    row.update({f"w{i:04}": i for i in range(columns)})
    return row


# -- crafted SQS bodies ---------------------------------------------------------------------------


def sns_wrapped(s3_body: str) -> str:
    """SNS → SQS without raw message delivery: the S3 JSON is a string in ``Message``."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "5f0c6a3e-2b1d-5c4e-9f8a-1b2c3d4e5f60",
            "TopicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:landing-events",
            "Subject": "Amazon S3 Notification",
            "Message": s3_body,
            "Timestamp": "2026-11-22T00:00:00.000Z",
            "SignatureVersion": "1",
            "Signature": "c2lnbmF0dXJl",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def eventbridge_created(bucket: str, key: str, etag: str, size: int) -> str:
    """EventBridge "Object Created": the key is raw (not URL-encoded)."""
    return json.dumps(
        {
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": ACCOUNT,
            "time": "2026-11-22T00:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": bucket},
                "object": {"key": key, "size": size, "etag": etag, "sequencer": "00617F08299329D189"},
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": ACCOUNT,
                "source-ip-address": "10.0.0.1",
                "reason": "PutObject",
            },
        }
    )


# -- queue helpers -------------------------------------------------------------------------------


def send(env: Env, body: str) -> str:
    """Send a raw body to the env's queue; returns the SQS MessageId."""
    return str(env.sqs.send_message(QueueUrl=env.prov.queue_url, MessageBody=body)["MessageId"])


def queue_counts(env: Env, url: str | None = None) -> tuple[int, int]:
    """(visible, in flight) of a queue."""
    attrs = env.sqs.get_queue_attributes(
        QueueUrl=url or env.prov.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def peek(env: Env, url: str) -> list[str]:
    """Bodies of the messages in a queue (received with a short visibility, not deleted)."""
    bodies: dict[str, str] = {}
    for _ in range(10):
        got = env.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=5).get("Messages", [])
        if not got:
            break
        bodies.update((m["MessageId"], m["Body"]) for m in got)
    return list(bodies.values())


def key_of(body: str) -> str | None:
    """The decoded object key of a plain S3 notification body (None for anything else)."""
    try:
        return unquote_plus(json.loads(body)["Records"][0]["s3"]["object"]["key"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def settle(env: Env, min_files: int, timeout: float) -> bool:
    """Wait until the queue is empty (every message acked or dead-lettered), the ledger holds at
    least ``min_files`` rows and none is CLAIMED. Returns False at the deadline instead of raising,
    so that each case still reports on its own."""

    def check() -> bool:
        if env.queue_depth() != 0:
            return False
        rows = env.files()
        return len(rows) >= min_files and not any(r["status"] == "CLAIMED" for r in rows)

    try:
        poll(check, timeout, "the env to settle", interval=0.2)
    except AssertionError:
        return False
    return True


# -- snapshot ------------------------------------------------------------------------------------


def parse_logs(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


@dataclass
class Snapshot:
    bucket: str
    settled: bool
    alive_before_stop: bool
    exit_codes: list[int]
    files: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]]
    logs: list[dict[str, Any]]
    raw_logs: str
    depth: int
    dlq_depth: int
    dlq_bodies: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)  # table -> column names (pyiceberg)
    sent: dict[str, str] = field(default_factory=dict)  # case name -> MessageId of a crafted message
    etags: dict[str, str] = field(default_factory=dict)  # case name -> etag of an upload

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ledger(self, key: str) -> list[dict[str, Any]]:
        return [f for f in self.files if f["key"] == key]

    def one(self, key: str) -> dict[str, Any]:
        rows = self.ledger(key)
        assert len(rows) == 1, f"expected one ledger row for {key!r}, got {rows}"
        return rows[0]

    def rows_of(self, key: str, table: str = "events") -> list[dict[str, Any]]:
        return [r for r in self.tables.get(table, []) if r["_source_file"] == self.uri(key)]

    def labels_of(self, key: str, table: str = "events") -> Counter[tuple[Any, Any]]:
        return Counter((r.get("label"), r.get("n")) for r in self.rows_of(key, table))

    def log(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.logs
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]

    def message_ids_for_key(self, key: str) -> set[str]:
        return {str(line["message_id"]) for line in self.logs if line.get("key") == key and "message_id" in line}

    def acked(self, message_id: str) -> bool:
        return bool(self.log("message_acked", message_id=message_id))

    def requeued(self, message_id: str) -> bool:
        return bool(self.log("message_requeued", message_id=message_id))

    def lines_about(self, key: str) -> list[str]:
        """Raw log lines naming a key, for failure messages."""
        return [line for line in self.raw_logs.splitlines() if key in line][:20]


def snapshot(env: Env, settled: bool, tables: tuple[str, ...], **extra: Any) -> Snapshot:
    """Stop the worker(s) with SIGTERM and capture everything the tests assert on."""
    alive = bool(env.workers) and all(p.poll() is None for p in env.workers)
    codes = env.stop_workers()
    read: dict[str, list[dict[str, Any]]] = {}
    columns: dict[str, list[str]] = {}
    for table in tables:
        try:
            read[table] = env.table_rows(table)
            columns[table] = [f.name for f in env.table(table).schema().fields]
        except Exception:  # noqa: BLE001 - a table that was never created reads as empty
            read[table], columns[table] = [], []
    raw = env.worker_logs()
    return Snapshot(
        bucket=env.bucket,
        settled=settled,
        alive_before_stop=alive,
        exit_codes=codes,
        files=env.files(),
        rejected=env.sql("SELECT * FROM rejected_messages ORDER BY id"),
        batches=env.sql("SELECT * FROM batches ORDER BY created_at"),
        tables=read,
        columns=columns,
        logs=parse_logs(raw),
        raw_logs=raw,
        depth=env.queue_depth(),
        dlq_depth=env.queue_depth(env.prov.dlq_url),
        dlq_bodies=peek(env, env.prov.dlq_url),
        **extra,
    )
