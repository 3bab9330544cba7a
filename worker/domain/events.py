from __future__ import annotations

# Turn the raw body of one SQS message into per-record results.
#
# Pure domain code: no I/O, no logging, no clock. Every input, however broken, produces a
# non-empty list of results; ``parse_message`` never raises.
#
# Understood bodies:
#   * a direct S3 event notification (``{"Records": [...]}``, eventVersion 2.x);
#   * the S3 ``s3:TestEvent`` sent when a notification configuration is saved;
#   * either of the above wrapped in an SNS envelope (raw message delivery off);
#   * an EventBridge event from ``aws.s3`` (detail-type "Object Created", "Object Deleted", ...).
#
# Results (one per S3 record; EventBridge and TestEvent bodies give exactly one):
#   * ``FileEvent``: an object was created and should be loaded;
#   * ``Ignored``: valid but needs no work (ack it);
#   * ``Malformed``: cannot be understood (the caller records the body and acks).
#
# The reverse direction, for re-queuing files and for tests: ``s3_notification_record`` builds one
# S3 event notification record as AWS sends it and ``s3_notification`` the SQS body holding it
# (pure too: the caller passes the event time).
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeAlias, TypedDict, Unpack
from urllib.parse import quote_plus, unquote_plus

import orjson

__all__ = [
    "FileEvent",
    "Ignored",
    "Malformed",
    "NotificationOptions",
    "RecordResult",
    "parse_message",
    "s3_notification",
    "s3_notification_record",
    "sequencer_newer",
]


@dataclass(frozen=True, slots=True)
class FileEvent:
    """An object was created in S3 and should be loaded."""

    bucket: str
    key: str  # decoded exactly once
    size: int | None
    etag: str | None  # surrounding double quotes stripped; None if absent
    sequencer: str | None
    version_id: str | None
    event_time: datetime | None  # timezone-aware UTC
    event_name: str  # without "s3:" prefix, e.g. "ObjectCreated:Put"
    envelope: str  # "s3" | "sns" | "eventbridge"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A record or message that is valid but needs no work: ack it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record or message that cannot be understood: record the body and ack."""

    reason: str


RecordResult: TypeAlias = FileEvent | Ignored | Malformed

_JsonObject: TypeAlias = dict[str, object]

_S3_SUPPORTED_MAJOR: Final = 2
_TEST_EVENT: Final = "s3:TestEvent"
_OBJECT_CREATED: Final = "ObjectCreated"
_SNS_IGNORED_TYPES: Final = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
_PREVIEW_CHARS: Final = 80


class _Invalid(Exception):
    """Internal: a field is missing or has the wrong shape; becomes ``Malformed``."""


# --------------------------------------------------------------------------- public API


def parse_message(body: str | bytes) -> list[RecordResult]:
    """Parse one SQS message body into one result per S3 record, in order.

    Never raises: anything that cannot be understood becomes ``Malformed`` with a
    reason naming what was wrong (record numbers in reasons are 1-based).
    """
    try:
        return _parse_body(body)
    # Last-resort guard: a poison message must never crash a worker.
    except Exception as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {_clip(str(exc))}"
        return [Malformed(f"internal error while parsing body: {detail}")]


def sequencer_newer(a: str, b: str) -> bool:
    """True if S3 sequencer ``a`` is strictly newer than ``b`` (same bucket and key).

    Sequencers are hex strings of varying length: right-pad the shorter with "0"
    and compare the upper-cased strings. Only meaningful for events of one key.
    """
    ua, ub = a.upper(), b.upper()
    width = max(len(ua), len(ub))
    return ua.ljust(width, "0") > ub.ljust(width, "0")


class NotificationOptions(TypedDict, total=False):
    """The optional fields of ``s3_notification_record`` (absent or None: the default in brackets)."""

    event_name: str  # ["ObjectCreated:Put"]
    event_version: str  # ["2.1"]
    sequencer: str | None  # [None: no sequencer field]
    event_time: datetime | None  # [None: no eventTime field]; written in milliseconds, UTC
    region: str | None  # [None: no awsRegion field]
    principal_id: str | None  # [None: no userIdentity field]
    configuration_id: str | None  # [None: no configurationId field]
    encode_slash: bool  # [False]: "/" stays as is (AWS); True encodes it too (moto)


def s3_notification_record(
    bucket: str, key: str, etag: str, size: int, **options: Unpack[NotificationOptions]
) -> dict[str, object]:
    """One S3 event notification record for a PUT (or ``event_name``) of ``bucket``/``key``.

    The key is form-encoded the way S3 does it (space -> "+"). Optional fields are present only
    when given, and every field is in the order AWS sends it. ``parse_message`` reads the record
    back to the same bucket, key, etag, size, sequencer and event time (to the millisecond).
    """
    record: dict[str, object] = {"eventVersion": options.get("event_version", "2.1"), "eventSource": "aws:s3"}
    if (region := options.get("region")) is not None:
        record["awsRegion"] = region
    if (when := options.get("event_time")) is not None:
        utc = when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)
        record["eventTime"] = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    record["eventName"] = options.get("event_name", "ObjectCreated:Put")
    if (principal := options.get("principal_id")) is not None:
        record["userIdentity"] = {"principalId": principal}
    s3: dict[str, object] = {"s3SchemaVersion": "1.0"}
    if (configuration := options.get("configuration_id")) is not None:
        s3["configurationId"] = configuration
    safe = "" if options.get("encode_slash", False) else "/"
    obj: dict[str, object] = {"key": quote_plus(key, safe=safe), "size": size, "eTag": etag}
    if (sequencer := options.get("sequencer")) is not None:
        obj["sequencer"] = sequencer
    s3["bucket"] = {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}
    s3["object"] = obj
    record["s3"] = s3
    return record


def s3_notification(bucket: str, key: str, etag: str, size: int, **options: Unpack[NotificationOptions]) -> str:
    """The SQS message body S3 sends for one such record, as compact JSON."""
    return orjson.dumps({"Records": [s3_notification_record(bucket, key, etag, size, **options)]}).decode()


# --------------------------------------------------------------------------- body level


def _parse_body(body: object) -> list[RecordResult]:
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            return [Malformed(f"body is not valid UTF-8: {exc}")]
    elif isinstance(body, str):
        text = body
    else:
        return [Malformed(f"body must be str or bytes, got {type(body).__name__}")]

    text = text.removeprefix("\ufeff")
    if not text.strip():
        return [Malformed("body is empty")]
    try:
        document: object = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [Malformed(f"body is not JSON: {_clip(str(exc))}")]
    if not isinstance(document, dict):
        return [Malformed(f"body is a JSON {_json_type(document)}, not an object")]

    if "Records" in document:
        return _parse_s3_notification(document, envelope="s3")
    if _is_s3_service_event(document):
        return [_parse_s3_service_event(document)]
    if _is_sns_envelope(document):
        return _parse_sns_envelope(document)
    if _is_eventbridge_event(document):
        return [_parse_eventbridge_event(document)]
    return [
        Malformed(
            "JSON object is not an S3 event notification, S3 TestEvent, SNS envelope "
            f"or EventBridge event (keys: {_keys_preview(document)})"
        )
    ]


def _is_s3_service_event(document: _JsonObject) -> bool:
    return "Event" in document and ("Service" in document or "Bucket" in document)


def _parse_s3_service_event(document: _JsonObject) -> RecordResult:
    event = document.get("Event")
    if event == _TEST_EVENT or event == "TestEvent":
        return Ignored(_TEST_EVENT)
    return Malformed(f"unsupported S3 service event {_preview(event)}")


# --------------------------------------------------------------------------- SNS


def _is_sns_envelope(document: _JsonObject) -> bool:
    return isinstance(document.get("Type"), str) and ("TopicArn" in document or "MessageId" in document)


def _parse_sns_envelope(document: _JsonObject) -> list[RecordResult]:
    sns_type = document.get("Type")
    if sns_type in _SNS_IGNORED_TYPES:
        return [Ignored(f"SNS {sns_type}")]
    if sns_type != "Notification":
        return [Malformed(f"unsupported SNS message Type {_preview(sns_type)}")]

    message = document.get("Message")
    if not isinstance(message, str):
        what = "missing" if message is None else f"a JSON {_json_type(message)}, not a string"
        return [Malformed(f"SNS Message is {what}")]
    try:
        inner: object = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        return [Malformed(f"SNS Message is not JSON: {_clip(str(exc))}")]
    if not isinstance(inner, dict):
        return [Malformed(f"SNS Message is a JSON {_json_type(inner)}, not an object")]

    if "Records" in inner:
        return _parse_s3_notification(inner, envelope="sns")
    if _is_s3_service_event(inner):
        return [_parse_s3_service_event(inner)]
    return [Malformed(f"SNS Message is not an S3 event notification (keys: {_keys_preview(inner)})")]


# --------------------------------------------------------------------------- S3 notification


def _parse_s3_notification(document: _JsonObject, *, envelope: str) -> list[RecordResult]:
    records = document.get("Records")
    if not isinstance(records, list):
        return [Malformed(f"Records must be an array, got {_json_type(records)}")]
    if not records:
        return [Ignored("no records")]
    results: list[RecordResult] = []
    for number, record in enumerate(records, start=1):
        try:
            results.append(_parse_s3_record(record, envelope=envelope))
        except _Invalid as exc:
            results.append(Malformed(f"record {number}: {exc}"))
    return results


def _parse_s3_record(record: object, *, envelope: str) -> RecordResult:
    if not isinstance(record, dict):
        raise _Invalid(f"must be an object, got {_json_type(record)}")

    version = _required_str(record, "eventVersion", "eventVersion")
    major = _major_version(version)
    if major is None:
        raise _Invalid(f"invalid eventVersion {_preview(version)} (expected <major>.<minor>)")
    if major != _S3_SUPPORTED_MAJOR:
        raise _Invalid(f"unsupported eventVersion {_clip(version)}")

    source = _required_str(record, "eventSource", "eventSource")
    if source != "aws:s3":
        raise _Invalid(f"unsupported eventSource {_preview(source)} (expected 'aws:s3')")

    event_name = _required_str(record, "eventName", "eventName").removeprefix("s3:")
    if not _is_object_created(event_name):
        return Ignored(f"not an ObjectCreated event: {_clip(event_name)}")

    s3 = _required_object(record, "s3", "s3")
    bucket = _required_object(s3, "bucket", "s3.bucket")
    obj = _required_object(s3, "object", "s3.object")
    raw_key = _required_str(obj, "key", "s3.object.key")
    try:
        # S3 notification keys are form-encoded (space -> "+", "+" -> "%2B"); decode exactly once.
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise _Invalid(f"s3.object.key is not valid percent-encoded UTF-8: {_preview(raw_key)}") from None

    etag_field = "eTag" if "eTag" in obj else "etag"
    return FileEvent(
        bucket=_required_str(bucket, "name", "s3.bucket.name"),
        key=key,
        size=_optional_size(obj, "size", "s3.object.size"),
        etag=_strip_etag(_optional_str(obj, etag_field, f"s3.object.{etag_field}")),
        sequencer=_optional_str(obj, "sequencer", "s3.object.sequencer"),
        version_id=_optional_str(obj, "versionId", "s3.object.versionId"),
        event_time=_optional_time(record, "eventTime", "eventTime"),
        event_name=event_name,
        envelope=envelope,
    )


def _major_version(version: str) -> int | None:
    major, _, minor = version.partition(".")
    if not (major.isascii() and major.isdigit()) or (minor and not (minor.isascii() and minor.isdigit())):
        return None
    return int(major)


def _is_object_created(event_name: str) -> bool:
    return event_name == _OBJECT_CREATED or event_name.startswith(_OBJECT_CREATED + ":")


# --------------------------------------------------------------------------- EventBridge


def _is_eventbridge_event(document: _JsonObject) -> bool:
    return "detail-type" in document or ("source" in document and "detail" in document)


def _parse_eventbridge_event(document: _JsonObject) -> RecordResult:
    try:
        return _parse_eventbridge_detail(document)
    except _Invalid as exc:
        return Malformed(f"EventBridge event: {exc}")


def _parse_eventbridge_detail(document: _JsonObject) -> RecordResult:
    source = document.get("source")
    if source != "aws.s3":
        raise _Invalid(f"unsupported source {_preview(source)} (expected 'aws.s3')")
    detail_type = _required_str(document, "detail-type", "detail-type")
    if detail_type != "Object Created":
        return Ignored(f"not an Object Created event: {_clip(detail_type)}")

    detail = _required_object(document, "detail", "detail")
    bucket = _required_object(detail, "bucket", "detail.bucket")
    obj = _required_object(detail, "object", "detail.object")
    # EventBridge keys arrive raw, NOT URL-encoded (reported from AWS; moto agrees): never decode.
    key = _required_str(obj, "key", "detail.object.key")

    reason = _optional_str(detail, "reason", "detail.reason")
    if reason is None or reason == _OBJECT_CREATED:  # moto sends reason "ObjectCreated"
        event_name = _OBJECT_CREATED
    else:
        event_name = f"{_OBJECT_CREATED}:{reason}"

    etag_field = "etag" if "etag" in obj else "eTag"  # moto spells it "eTag"
    return FileEvent(
        bucket=_required_str(bucket, "name", "detail.bucket.name"),
        key=key,
        size=_optional_size(obj, "size", "detail.object.size"),
        etag=_strip_etag(_optional_str(obj, etag_field, f"detail.object.{etag_field}")),
        sequencer=_optional_str(obj, "sequencer", "detail.object.sequencer"),
        version_id=_optional_str(obj, "version-id", "detail.object.version-id"),
        event_time=_optional_time(document, "time", "time"),
        event_name=event_name,
        envelope="eventbridge",
    )


# --------------------------------------------------------------------------- field readers


def _required_object(parent: _JsonObject, name: str, path: str) -> _JsonObject:
    value = parent.get(name)
    if value is None:
        raise _Invalid(f"missing {path}")
    if not isinstance(value, dict):
        raise _Invalid(f"{path} must be an object, got {_json_type(value)}")
    return value


def _required_str(parent: _JsonObject, name: str, path: str) -> str:
    value = parent.get(name)
    if value is None:
        raise _Invalid(f"missing {path}")
    if not isinstance(value, str):
        raise _Invalid(f"{path} must be a string, got {_json_type(value)}")
    if not value:
        raise _Invalid(f"{path} is empty")
    return value


def _optional_str(parent: _JsonObject, name: str, path: str) -> str | None:
    """Absent, null and "" all mean "not given"."""
    value = parent.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{path} must be a string, got {_json_type(value)}")
    return value


def _optional_size(parent: _JsonObject, name: str, path: str) -> int | None:
    value = parent.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(f"{path} must be a non-negative integer, got {_preview(value)}")
    return value


def _strip_etag(etag: str | None) -> str | None:
    if etag is None:
        return None
    return etag.strip('"') or None


def _optional_time(parent: _JsonObject, name: str, path: str) -> datetime | None:
    value = parent.get(name)
    if value is None:
        return None
    problem = f"{path} is not an ISO-8601 timestamp: {_preview(value)}"
    try:
        if isinstance(value, bool):
            raise _Invalid(problem)
        # Epoch seconds: moto's EventBridge emulator sends these.
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if not isinstance(value, str):
            raise _Invalid(problem)
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise _Invalid(problem) from None


# --------------------------------------------------------------------------- reason helpers


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _clip(text: str) -> str:
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"


def _preview(value: object) -> str:
    if isinstance(value, dict | list):
        return f"a JSON {_json_type(value)}"
    return _clip(repr(value))


def _keys_preview(document: _JsonObject) -> str:
    keys = sorted(document)
    if not keys:
        return "none"
    shown = ", ".join(_clip(repr(key)) for key in keys[:10])
    if len(keys) > 10:
        shown += f", … ({len(keys)} in all)"
    return shown
