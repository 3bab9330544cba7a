"""Unit tests for worker.domain.events: SQS message bodies -> per-record results."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.domain.events import (
    FileEvent,
    Ignored,
    Malformed,
    RecordResult,
    parse_message,
    sequencer_newer,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"

# No example database (nothing written to the repo), no deadline (CI machines vary).
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROPERTY = settings(max_examples=150, deadline=None, database=None)

PUT_TIME = datetime(2026, 7, 1, 9, 15, 1, 872000, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers


def load(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def parse_fixture(name: str) -> list[RecordResult]:
    return parse_message(load(name))


def only(results: list[RecordResult]) -> RecordResult:
    assert len(results) == 1, results
    return results[0]


def only_file_event(results: list[RecordResult]) -> FileEvent:
    result = only(results)
    assert isinstance(result, FileEvent), result
    return result


def only_reason(results: list[RecordResult], kind: type[Ignored | Malformed]) -> str:
    result = only(results)
    assert isinstance(result, kind), result
    return result.reason


def base_record() -> dict[str, Any]:
    """A fresh copy of the realistic ObjectCreated:Put record from s3_put.json."""
    record: dict[str, Any] = json.loads(load("s3_put.json"))["Records"][0]
    return record


def s3_body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def eventbridge_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(load("eventbridge_object_created.json"))
    return doc


def sns_wrap(message: str, sns_type: str = "Notification") -> str:
    envelope: dict[str, Any] = json.loads(load("sns_put.json"))
    envelope["Type"] = sns_type
    envelope["Message"] = message
    return json.dumps(envelope)


def assert_well_formed(results: object) -> None:
    """The contract every call of parse_message must honour, whatever the input."""
    assert isinstance(results, list)
    assert results, "parse_message must return at least one result"
    for result in results:
        assert isinstance(result, FileEvent | Ignored | Malformed), result
        if isinstance(result, Ignored | Malformed):
            assert isinstance(result.reason, str)
            assert result.reason
            assert not result.reason.startswith("internal error"), result.reason
            continue
        assert isinstance(result.bucket, str)
        assert result.bucket
        assert isinstance(result.key, str)
        assert result.key
        assert result.size is None or (type(result.size) is int and result.size >= 0)
        assert result.etag is None or (isinstance(result.etag, str) and not result.etag.startswith('"'))
        assert result.sequencer is None or isinstance(result.sequencer, str)
        assert result.version_id is None or isinstance(result.version_id, str)
        if result.event_time is not None:
            assert result.event_time.utcoffset() == timedelta(0)
        assert result.event_name == "ObjectCreated" or result.event_name.startswith("ObjectCreated:")
        assert not result.event_name.startswith("s3:")
        assert result.envelope in {"s3", "sns", "eventbridge"}


# --------------------------------------------------------------------------- realistic fixtures


def test_direct_s3_put_gives_a_complete_file_event() -> None:
    assert parse_fixture("s3_put.json") == [
        FileEvent(
            bucket="icefeed-landing",
            key="landing/orders/2026/07/01/orders-0001.parquet",
            size=52_428_800,
            etag="9b2cf535f27731c974343645a3985328",
            sequencer="0055AED6DCD90281E5",
            version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
            event_time=PUT_TIME,
            event_name="ObjectCreated:Put",
            envelope="s3",
        )
    ]


def test_bytes_body_parses_like_str_body() -> None:
    text = load("s3_put.json")
    expected = parse_message(text)
    assert parse_message(text.encode("utf-8")) == expected
    assert parse_message(bytearray(text.encode("utf-8"))) == expected  # type: ignore[arg-type]


def test_body_with_utf8_bom_is_accepted() -> None:
    event = only_file_event(parse_message("\ufeff" + load("s3_put.json")))
    assert event.key == "landing/orders/2026/07/01/orders-0001.parquet"


def test_multipart_upload_complete() -> None:
    event = only_file_event(parse_fixture("s3_multipart_complete.json"))
    assert event.event_name == "ObjectCreated:CompleteMultipartUpload"
    assert event.etag == "4af981f98d22a0b9979da24b259e5e42-12"
    assert event.size == 198_524_144
    assert event.sequencer == "0064D3901D00059242"
    assert event.version_id == "uhggCJ2_B6gU2JaXWXebnXFDstO0ID6G"


def test_copy_strips_etag_quotes_and_has_no_version() -> None:
    event = only_file_event(parse_fixture("s3_copy.json"))
    assert event.event_name == "ObjectCreated:Copy"
    assert event.etag == "5d41402abc4b2a76b9719d911017c592"
    assert event.version_id is None
    assert event.key == "landing/customers/customers-2026-07-01.csv"


def test_object_removed_is_ignored_with_event_name() -> None:
    assert parse_fixture("s3_object_removed.json") == [Ignored("not an ObjectCreated event: ObjectRemoved:Delete")]


def test_s3_test_event_is_ignored() -> None:
    assert parse_fixture("s3_test_event.json") == [Ignored("s3:TestEvent")]


def test_sns_wrapped_put_equals_direct_put_apart_from_envelope() -> None:
    direct = only_file_event(parse_fixture("s3_put.json"))
    via_sns = only_file_event(parse_fixture("sns_put.json"))
    assert via_sns.envelope == "sns"
    assert via_sns == dataclasses.replace(direct, envelope="sns")


def test_sns_wrapped_test_event_is_ignored() -> None:
    assert parse_fixture("sns_test_event.json") == [Ignored("s3:TestEvent")]


def test_sns_subscription_confirmation_is_ignored() -> None:
    assert "SubscriptionConfirmation" in only_reason(parse_fixture("sns_subscription_confirmation.json"), Ignored)


def test_eventbridge_object_created() -> None:
    assert parse_fixture("eventbridge_object_created.json") == [
        FileEvent(
            bucket="icefeed-landing",
            key="landing/orders/2026/07/01/orders-0002.parquet",
            size=5,
            etag="b1946ac92492d2347c6235b4d2611184",
            sequencer="617f08299329d189",
            version_id="IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            event_time=datetime(2026, 7, 1, 9, 15, 1, tzinfo=UTC),
            event_name="ObjectCreated:PutObject",
            envelope="eventbridge",
        )
    ]


def test_eventbridge_object_deleted_is_ignored() -> None:
    assert parse_fixture("eventbridge_object_deleted.json") == [Ignored("not an Object Created event: Object Deleted")]


def test_eventbridge_as_emitted_by_moto() -> None:
    event = only_file_event(parse_fixture("eventbridge_moto_object_created.json"))
    # EventBridge keys are not URL-encoded: the key is used raw.
    assert event.key == "landing/Q1 report+final 100%.csv"
    # moto spells it "eTag" and sends "time" as epoch seconds.
    assert event.etag == "0a5f3b7f0e2d4c4e9d1b8c6a7e5f4d3c"
    assert event.version_id is None
    assert event.event_time == datetime(2026, 7, 1, 9, 15, 1, 250000, tzinfo=UTC)
    assert event.event_name == "ObjectCreated"


def test_two_records_give_two_results_in_order() -> None:
    first, second = parse_fixture("s3_two_records.json")
    assert isinstance(first, FileEvent)
    assert first.key == "landing/orders/2026/07/01/orders-0003.parquet"
    assert first.sequencer == "0055AED6DCD9028200"
    assert second == Ignored("not an ObjectCreated event: ObjectRemoved:DeleteMarkerCreated")


def test_moto_record_with_encoded_slash_and_plus_space() -> None:
    event = only_file_event(parse_fixture("s3_moto_encoded_slash_and_space.json"))
    assert event.key == "landing/year=2026/my file.csv"
    assert event.sequencer is None
    assert event.version_id is None
    assert event.event_time == datetime(2026, 7, 1, 9, 30, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fixture", "expected_key"),
    [
        ("s3_key_spaces.json", "landing/Q1 report  final.csv"),
        ("s3_key_plus.json", "landing/c++/g++-13 build+1.tar.gz"),
        ("s3_key_percent.json", "landing/50% off/100%.csv"),
        # A key literally named "a%2Fb" arrives as "a%252Fb": decoded once, not twice.
        ("s3_key_literal_percent_2f.json", "landing/a%2Fb.csv"),
        ("s3_key_unicode.json", "données/été 2026/ü+ñ%.json"),
    ],
)
def test_special_character_keys_are_decoded_exactly_once(fixture: str, expected_key: str) -> None:
    assert only_file_event(parse_fixture(fixture)).key == expected_key


def test_event_version_3_is_malformed() -> None:
    reason = only_reason(parse_fixture("s3_event_version_3.json"), Malformed)
    assert "unsupported eventVersion 3.0" in reason
    assert reason.startswith("record 1:")


def test_missing_key_is_malformed_and_names_the_field() -> None:
    assert parse_fixture("s3_missing_key.json") == [Malformed("record 1: missing s3.object.key")]


def test_json_that_is_not_an_event_is_malformed() -> None:
    reason = only_reason(parse_fixture("not_an_event.json"), Malformed)
    assert "not an S3 event notification" in reason
    assert "hello" in reason


# --------------------------------------------------------------------------- S3 records: edge cases


@pytest.mark.parametrize("version", ["2.0", "2.1", "2.2", "2.10", "2"])
def test_any_event_version_2_minor_is_accepted(version: str) -> None:
    record = base_record()
    record["eventVersion"] = version
    assert only_file_event(parse_message(s3_body(record))).event_name == "ObjectCreated:Put"


@pytest.mark.parametrize("version", ["1.0", "3.0", "10.1", "20.0"])
def test_other_event_version_majors_are_unsupported(version: str) -> None:
    record = base_record()
    record["eventVersion"] = version
    assert parse_message(s3_body(record)) == [Malformed(f"record 1: unsupported eventVersion {version}")]


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        ("", "eventVersion is empty"),
        ("abc", "invalid eventVersion 'abc'"),
        ("2.x", "invalid eventVersion '2.x'"),
        ("v2.1", "invalid eventVersion 'v2.1'"),
        ("２.1", "invalid eventVersion '２.1'"),  # fullwidth digit
        (2.1, "eventVersion must be a string, got number"),
        (None, "missing eventVersion"),
    ],
)
def test_invalid_event_version_is_malformed(version: object, fragment: str) -> None:
    record = base_record()
    record["eventVersion"] = version
    assert fragment in only_reason(parse_message(s3_body(record)), Malformed)


def test_event_version_is_required() -> None:
    record = base_record()
    del record["eventVersion"]
    assert parse_message(s3_body(record)) == [Malformed("record 1: missing eventVersion")]


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("ObjectCreated:Put", "ObjectCreated:Put"),
        ("s3:ObjectCreated:Put", "ObjectCreated:Put"),
        ("s3:ObjectCreated:Post", "ObjectCreated:Post"),
        (
            "ObjectCreated:CompleteMultipartUpload",
            "ObjectCreated:CompleteMultipartUpload",
        ),
    ],
)
def test_event_name_is_normalised_without_s3_prefix(raw_name: str, expected: str) -> None:
    record = base_record()
    record["eventName"] = raw_name
    assert only_file_event(parse_message(s3_body(record))).event_name == expected


@pytest.mark.parametrize(
    "raw_name",
    [
        "ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "ObjectRestore:Completed",
        "LifecycleExpiration:Delete",
        "LifecycleTransition",
        "ObjectTagging:Put",
        "ReducedRedundancyLostObject",
        "ObjectCreatedButNotReally",
    ],
)
def test_non_object_created_events_are_ignored(raw_name: str) -> None:
    record = base_record()
    record["eventName"] = raw_name
    # No work is needed, so missing fields do not matter.
    del record["s3"]["object"]["key"]
    expected = f"not an ObjectCreated event: {raw_name.removeprefix('s3:')}"
    assert parse_message(s3_body(record)) == [Ignored(expected)]


@pytest.mark.parametrize("source", ["minio:s3", "aws:sqs", "", 1])
def test_foreign_event_source_is_malformed(source: object) -> None:
    record = base_record()
    record["eventSource"] = source
    assert "eventSource" in only_reason(parse_message(s3_body(record)), Malformed)


def test_missing_event_source_is_malformed() -> None:
    record = base_record()
    del record["eventSource"]
    assert parse_message(s3_body(record)) == [Malformed("record 1: missing eventSource")]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("s3"), "s3"),
        (lambda r: r.update(s3="bucket"), "s3"),
        (lambda r: r["s3"].pop("bucket"), "s3.bucket"),
        (lambda r: r["s3"]["bucket"].pop("name"), "s3.bucket.name"),
        (lambda r: r["s3"]["bucket"].update(name=""), "s3.bucket.name"),
        (
            lambda r: r["s3"]["bucket"].update(name=["icefeed-landing"]),
            "s3.bucket.name",
        ),
        (lambda r: r["s3"].update(object=[]), "s3.object"),
        (lambda r: r["s3"]["object"].update(key=None), "s3.object.key"),
        (lambda r: r["s3"]["object"].update(key=""), "s3.object.key"),
        (lambda r: r["s3"]["object"].update(key=42), "s3.object.key"),
        (lambda r: r["s3"]["object"].update(key="bad%FFutf8"), "s3.object.key"),
        (lambda r: r["s3"]["object"].update(size=-1), "s3.object.size"),
        (lambda r: r["s3"]["object"].update(size=1.5), "s3.object.size"),
        (lambda r: r["s3"]["object"].update(size="1024"), "s3.object.size"),
        (lambda r: r["s3"]["object"].update(size=True), "s3.object.size"),
        (lambda r: r["s3"]["object"].update(eTag=123), "s3.object.eTag"),
        (lambda r: r["s3"]["object"].update(sequencer=5), "s3.object.sequencer"),
        (lambda r: r["s3"]["object"].update(versionId={}), "s3.object.versionId"),
        (lambda r: r.update(eventTime="yesterday"), "eventTime"),
        (lambda r: r.update(eventTime="2026-13-01T00:00:00Z"), "eventTime"),
        (lambda r: r.update(eventTime=True), "eventTime"),
        (lambda r: r.update(eventTime=["2026-07-01T09:15:01Z"]), "eventTime"),
        (lambda r: r.update(eventName=7), "eventName"),
    ],
)
def test_bad_fields_are_malformed_and_named(mutate: Callable[[dict[str, Any]], object], field: str) -> None:
    record = base_record()
    mutate(record)
    reason = only_reason(parse_message(s3_body(record)), Malformed)
    assert reason.startswith("record 1: ")
    assert field in reason


def test_optional_fields_may_be_absent_or_null() -> None:
    record = base_record()
    obj = record["s3"]["object"]
    del obj["size"], obj["eTag"], obj["sequencer"], record["eventTime"]
    obj["versionId"] = None
    event = only_file_event(parse_message(s3_body(record)))
    assert (
        event.size,
        event.etag,
        event.sequencer,
        event.version_id,
        event.event_time,
    ) == (None,) * 5


def test_empty_strings_count_as_absent() -> None:
    record = base_record()
    record["s3"]["object"].update(eTag="", sequencer="", versionId="")
    event = only_file_event(parse_message(s3_body(record)))
    assert (event.etag, event.sequencer, event.version_id) == (None, None, None)


def test_zero_size_is_valid() -> None:
    record = base_record()
    record["s3"]["object"]["size"] = 0
    assert only_file_event(parse_message(s3_body(record))).size == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-07-01T09:15:01.872Z", PUT_TIME),
        ("2026-07-01T11:15:01.872+02:00", PUT_TIME),
        ("2026-07-01T09:15:01.872", PUT_TIME),  # naive: taken as UTC
        ("1970-01-01T00:00:00.000Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_event_time_becomes_aware_utc(raw: str, expected: datetime) -> None:
    record = base_record()
    record["eventTime"] = raw
    event_time = only_file_event(parse_message(s3_body(record))).event_time
    assert event_time == expected
    assert event_time is not None
    assert event_time.tzinfo is UTC


def test_naive_event_time_is_utc_whatever_the_host_timezone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = base_record()
    record["eventTime"] = "2026-07-01T09:15:01.872"
    monkeypatch.setenv("TZ", "JST-9")  # POSIX TZ string: UTC+9, needs no tz database
    time.tzset()
    try:
        assert only_file_event(parse_message(s3_body(record))).event_time == PUT_TIME
    finally:
        monkeypatch.undo()
        time.tzset()


def test_one_bad_record_does_not_spoil_the_others() -> None:
    good = base_record()
    bad = base_record()
    del bad["s3"]["bucket"]["name"]
    removed = base_record()
    removed["eventName"] = "ObjectRemoved:Delete"
    results = parse_message(s3_body(good, bad, removed, 17))  # type: ignore[arg-type]
    assert len(results) == 4
    assert isinstance(results[0], FileEvent)
    assert results[1] == Malformed("record 2: missing s3.bucket.name")
    assert results[2] == Ignored("not an ObjectCreated event: ObjectRemoved:Delete")
    assert results[3] == Malformed("record 4: must be an object, got number")


def test_empty_records_is_ignored() -> None:
    assert parse_message('{"Records": []}') == [Ignored("no records")]


@pytest.mark.parametrize("records", ['"x"', "{}", "null", "3"])
def test_records_that_is_not_an_array_is_malformed(records: str) -> None:
    assert "Records" in only_reason(parse_message(f'{{"Records": {records}}}'), Malformed)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        ("a%252Fb", "a%2Fb"),
        ("%2525", "%25"),
        ("100%25+sure", "100% sure"),
        ("a%2Bb+c", "a+b c"),
        ("dir%2Fsub%2Ffile.csv", "dir/sub/file.csv"),
        ("dir/sub/file.csv", "dir/sub/file.csv"),
    ],
)
def test_keys_are_unquoted_plus_exactly_once(encoded: str, expected: str) -> None:
    record = base_record()
    record["s3"]["object"]["key"] = encoded
    assert only_file_event(parse_message(s3_body(record))).key == expected


def test_unknown_s3_service_event_is_malformed() -> None:
    body = json.loads(load("s3_test_event.json"))
    body["Event"] = "s3:SomethingNew"
    assert "s3:SomethingNew" in only_reason(parse_message(json.dumps(body)), Malformed)


# --------------------------------------------------------------------------- body level


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("not json", "not JSON"),
        ('{"Records": [', "not JSON"),
        (b"\xff\xfe\x00{", "UTF-8"),
        (b"\xc3\x28", "UTF-8"),
        ("[]", "array"),
        ("null", "null"),
        ("42", "number"),
        ('"s3"', "string"),
        ("true", "boolean"),
        ('{"hello": 1}', "not an S3 event notification"),
        ("{}", "not an S3 event notification"),
    ],
)
def test_unusable_bodies_are_malformed_with_a_clear_reason(body: str | bytes, fragment: str) -> None:
    assert fragment in only_reason(parse_message(body), Malformed)


def test_non_str_body_is_malformed_not_raised() -> None:
    assert "str or bytes" in only_reason(parse_message(12345), Malformed)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SNS


def test_sns_unsubscribe_confirmation_is_ignored() -> None:
    body = sns_wrap("You have unsubscribed.", sns_type="UnsubscribeConfirmation")
    assert "UnsubscribeConfirmation" in only_reason(parse_message(body), Ignored)


def test_sns_unknown_type_is_malformed() -> None:
    assert "Type" in only_reason(parse_message(sns_wrap("{}", sns_type="Surprise")), Malformed)


def test_sns_message_that_is_not_json_is_malformed() -> None:
    assert "SNS Message is not JSON" in only_reason(parse_message(sns_wrap("hello")), Malformed)


def test_sns_message_that_is_not_a_string_is_malformed() -> None:
    envelope = json.loads(load("sns_put.json"))
    # An object, not the usual JSON string.
    envelope["Message"] = json.loads(envelope["Message"])
    assert "SNS Message" in only_reason(parse_message(json.dumps(envelope)), Malformed)


def test_sns_message_missing_is_malformed() -> None:
    envelope = json.loads(load("sns_put.json"))
    del envelope["Message"]
    assert "SNS Message is missing" in only_reason(parse_message(json.dumps(envelope)), Malformed)


@pytest.mark.parametrize("message", ['{"hello": 1}', "[1, 2]", "7"])
def test_sns_message_that_is_not_an_s3_event_is_malformed(message: str) -> None:
    assert "SNS Message" in only_reason(parse_message(sns_wrap(message)), Malformed)


def test_sns_message_with_bad_record_names_the_record() -> None:
    record = base_record()
    record["eventVersion"] = "3.0"
    assert parse_message(sns_wrap(s3_body(record))) == [Malformed("record 1: unsupported eventVersion 3.0")]


def test_sns_message_with_no_records_is_ignored() -> None:
    assert parse_message(sns_wrap('{"Records": []}')) == [Ignored("no records")]


# --------------------------------------------------------------------------- EventBridge


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("PutObject", "ObjectCreated:PutObject"),
        ("CompleteMultipartUpload", "ObjectCreated:CompleteMultipartUpload"),
        ("CopyObject", "ObjectCreated:CopyObject"),
        (None, "ObjectCreated"),
    ],
)
def test_eventbridge_event_name_comes_from_reason(reason: str | None, expected: str) -> None:
    doc = eventbridge_doc()
    if reason is None:
        del doc["detail"]["reason"]
    else:
        doc["detail"]["reason"] = reason
    assert only_file_event(parse_message(json.dumps(doc))).event_name == expected


@pytest.mark.parametrize(
    "detail_type",
    [
        "Object Deleted",
        "Object Restore Completed",
        "Object Tags Added",
        "Object ACL Updated",
    ],
)
def test_eventbridge_other_detail_types_are_ignored(detail_type: str) -> None:
    doc = eventbridge_doc()
    doc["detail-type"] = detail_type
    assert parse_message(json.dumps(doc)) == [Ignored(f"not an Object Created event: {detail_type}")]


def test_eventbridge_key_is_used_raw_not_decoded() -> None:
    doc = eventbridge_doc()
    doc["detail"]["object"]["key"] = "landing/a%2Fb+c d.csv"
    assert only_file_event(parse_message(json.dumps(doc))).key == "landing/a%2Fb+c d.csv"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(source="aws.ec2"), "source"),
        (lambda d: d.update({"detail-type": 3}), "detail-type"),
        (lambda d: d.pop("detail"), "detail"),
        (lambda d: d["detail"].pop("bucket"), "detail.bucket"),
        (lambda d: d["detail"]["bucket"].update(name=None), "detail.bucket.name"),
        (lambda d: d["detail"].update(object="k"), "detail.object"),
        (lambda d: d["detail"]["object"].pop("key"), "detail.object.key"),
        (lambda d: d["detail"]["object"].update(size=False), "detail.object.size"),
        (lambda d: d["detail"]["object"].update(etag=[]), "detail.object.etag"),
        (
            lambda d: d["detail"]["object"].update({"version-id": 1}),
            "detail.object.version-id",
        ),
        (lambda d: d["detail"].update(reason=5), "detail.reason"),
        (lambda d: d.update(time="12 Nov 2021"), "time"),
        (lambda d: d.update(time=1e300), "time"),
    ],
)
def test_eventbridge_bad_fields_are_malformed_and_named(mutate: Callable[[dict[str, Any]], object], field: str) -> None:
    doc = eventbridge_doc()
    mutate(doc)
    reason = only_reason(parse_message(json.dumps(doc)), Malformed)
    assert reason.startswith("EventBridge event: ")
    assert field in reason


# --------------------------------------------------------------------------- sequencer_newer


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        ("0055AED6DCD90281E5", "0055AED6DCD90281E4", True),
        ("0055AED6DCD90281E4", "0055AED6DCD90281E5", False),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E5", False),
        ("0055aed6dcd90281e5", "0055AED6DCD90281E4", True),  # case-insensitive
        ("0055AED6DCD90281E5", "0055aed6dcd90281e5", False),
        ("0055AED6DCD9028101", "0055AED6DCD90281", True),  # shorter padded: ...8100
        ("0055AED6DCD90281", "0055AED6DCD9028101", False),
        ("0055AED6DCD90281", "0055AED6DCD9028100", False),  # equal once padded
        ("0055AED6DCD9028100", "0055AED6DCD90281", False),
        ("0055AED6DCD90282", "0055AED6DCD90281FF", True),
        ("617f08299329d189", "617f0837b476e463", False),
        ("A", "9", True),  # 0xA > 0x9
    ],
)
def test_sequencer_newer_examples(a: str, b: str, newer: bool) -> None:
    assert sequencer_newer(a, b) is newer


HEX = st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=24)


@PROPERTY
@given(HEX, HEX)
def test_sequencer_newer_matches_padded_numeric_order(a: str, b: str) -> None:
    width = max(len(a), len(b))
    assert sequencer_newer(a, b) == (int(a.ljust(width, "0"), 16) > int(b.ljust(width, "0"), 16))


@PROPERTY
@given(HEX, HEX)
def test_sequencer_newer_is_a_strict_order(a: str, b: str) -> None:
    assert not sequencer_newer(a, a)
    assert not (sequencer_newer(a, b) and sequencer_newer(b, a))
    assert sequencer_newer(a + "0", b) == sequencer_newer(a, b)


# --------------------------------------------------------------------------- properties: keys


KEYS = st.text(min_size=1, max_size=60)

ENCODERS: dict[str, Callable[[str], str]] = {
    "quote_plus default": quote_plus,  # NB: quote_plus's default safe is "", so "/" -> %2F too
    "real AWS (slash kept)": lambda k: quote_plus(k, safe="/"),
    "moto (nothing safe)": lambda k: quote_plus(k, safe=""),
}


@pytest.mark.parametrize("encoder", ENCODERS.values(), ids=ENCODERS.keys())
@PROPERTY
@given(key=KEYS)
def test_any_key_round_trips_through_s3_encoding(encoder: Callable[[str], str], key: str) -> None:
    record = base_record()
    record["s3"]["object"]["key"] = encoder(key)
    assert only_file_event(parse_message(s3_body(record))).key == key
    assert only_file_event(parse_message(sns_wrap(s3_body(record)))).key == key


@PROPERTY
@given(key=KEYS)
def test_any_key_round_trips_through_eventbridge_raw(key: str) -> None:
    doc = eventbridge_doc()
    doc["detail"]["object"]["key"] = key
    assert only_file_event(parse_message(json.dumps(doc).encode("utf-8"))).key == key


# --------------------------------------------------------------------------- properties: never raises

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


ABSENT = object()  # sentinel: leave the field out altogether


def maybe(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, sometimes any JSON value, sometimes absent."""
    return st.one_of(plausible, plausible, JSON_VALUES, st.just(ABSENT))


def drop_absent(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_absent(v) for k, v in value.items() if v is not ABSENT}
    if isinstance(value, list):
        return [drop_absent(v) for v in value if v is not ABSENT]
    return value


PLAUSIBLE_KEYS = st.one_of(KEYS, KEYS.map(quote_plus), st.just("%"), st.just("%FF"), st.just("a%2"))
PLAUSIBLE_TIMES = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))])).map(
        lambda d: d.isoformat()
    ),
    st.just("2026-07-01T09:15:01.872Z"),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
)

S3_RECORDS = st.fixed_dictionaries(
    {
        "eventVersion": maybe(st.sampled_from(["2.0", "2.1", "2.2", "3.0", "2", "2.x"])),
        "eventSource": maybe(st.sampled_from(["aws:s3", "minio:s3"])),
        "eventName": maybe(st.sampled_from(["ObjectCreated:Put", "s3:ObjectCreated:Copy", "ObjectRemoved:Delete"])),
        "eventTime": maybe(PLAUSIBLE_TIMES),
        "s3": maybe(
            st.fixed_dictionaries(
                {
                    "bucket": maybe(st.fixed_dictionaries({"name": maybe(st.text(max_size=10))})),
                    "object": maybe(
                        st.fixed_dictionaries(
                            {
                                "key": maybe(PLAUSIBLE_KEYS),
                                "size": maybe(st.integers(min_value=-5, max_value=2**64)),
                                "eTag": maybe(st.text(max_size=10)),
                                "sequencer": maybe(HEX),
                                "versionId": maybe(st.text(max_size=10)),
                            }
                        )
                    ),
                }
            )
        ),
    }
).map(drop_absent)

S3_DOCUMENTS = st.fixed_dictionaries({"Records": maybe(st.lists(maybe(S3_RECORDS), max_size=3))}).map(drop_absent)

EVENTBRIDGE_DOCUMENTS = st.fixed_dictionaries(
    {
        "source": maybe(st.just("aws.s3")),
        "detail-type": maybe(st.sampled_from(["Object Created", "Object Deleted"])),
        "time": maybe(PLAUSIBLE_TIMES),
        "detail": maybe(
            st.fixed_dictionaries(
                {
                    "bucket": maybe(st.fixed_dictionaries({"name": maybe(st.text(max_size=10))})),
                    "object": maybe(
                        st.fixed_dictionaries(
                            {
                                "key": maybe(PLAUSIBLE_KEYS),
                                "size": maybe(st.integers(min_value=-5, max_value=2**64)),
                                "etag": maybe(st.text(max_size=10)),
                                "version-id": maybe(st.text(max_size=10)),
                            }
                        )
                    ),
                    "reason": maybe(st.sampled_from(["PutObject", "ObjectCreated", ""])),
                }
            )
        ),
    }
).map(drop_absent)

SNS_DOCUMENTS = st.fixed_dictionaries(
    {
        "Type": maybe(st.sampled_from(["Notification", "SubscriptionConfirmation", "Other"])),
        "TopicArn": st.just("arn:aws:sns:eu-west-1:111122223333:t"),
        "Message": maybe(
            st.one_of(S3_DOCUMENTS, EVENTBRIDGE_DOCUMENTS, JSON_VALUES).map(json.dumps) | st.text(max_size=20)
        ),
    }
).map(drop_absent)


@FUZZ
@given(st.text())
def test_never_raises_on_arbitrary_text(body: str) -> None:
    assert_well_formed(parse_message(body))


@FUZZ
@given(st.binary())
def test_never_raises_on_arbitrary_bytes(body: bytes) -> None:
    assert_well_formed(parse_message(body))


@FUZZ
@given(JSON_VALUES)
def test_never_raises_on_arbitrary_json(value: Any) -> None:
    assert_well_formed(parse_message(json.dumps(value)))


@FUZZ
@given(st.one_of(S3_DOCUMENTS, EVENTBRIDGE_DOCUMENTS, SNS_DOCUMENTS))
def test_never_raises_on_event_shaped_json(document: dict[str, Any]) -> None:
    body = json.dumps(document)
    results = parse_message(body)
    assert_well_formed(results)
    assert parse_message(body.encode("utf-8")) == results  # str and bytes agree
    records = document.get("Records")
    if isinstance(records, list) and records:
        assert len(results) == len(records)  # one result per S3 record


# --------------------------------------------------------------------------- every result, in full


def test_every_fixture_and_crafted_body_matches_its_snapshot() -> None:
    """Each result of tests/unit/events_snapshot.py's bodies, reasons included; after a
    deliberate change: ``python -m tests.unit.events_snapshot``."""
    from tests.unit.events_snapshot import SNAPSHOT, snapshot
    from tests.unit.snapshot_check import assert_matches

    assert_matches(SNAPSHOT, snapshot())


def test_the_notification_builder_writes_time_in_utc_and_encodes_slashes_when_asked() -> None:
    from worker.domain.events import s3_notification_record

    naive = s3_notification_record("b", "a/b c", "e", 1, event_time=datetime(2026, 1, 2, 3, 4, 5, 678900))
    aware = s3_notification_record(
        "b", "a/b c", "e", 1, event_time=datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    )
    assert naive["eventTime"] == "2026-01-02T03:04:05.678Z" and aware["eventTime"] == "2026-01-02T03:04:05.000Z"
    plain = s3_notification_record("b", "a/b c", "e", 1)
    moto = s3_notification_record("b", "a/b c", "e", 1, encode_slash=True)
    assert plain["s3"]["object"]["key"] == "a/b+c" and moto["s3"]["object"]["key"] == "a%2Fb+c"  # type: ignore[index]
