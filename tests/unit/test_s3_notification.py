"""The S3 notification builder (worker.domain.events.s3_notification): what it writes is what AWS
sends, and parse_message reads it back to the same file identity."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.domain.events import FileEvent, parse_message, s3_notification, s3_notification_record


def test_a_minimal_record_has_the_fields_aws_always_sends_and_no_optional_ones() -> None:
    assert s3_notification_record("land", "events/a b+c.json", "e1", 10) == {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": "land", "arn": "arn:aws:s3:::land"},
            "object": {"key": "events/a+b%2Bc.json", "size": 10, "eTag": "e1"},
        },
    }


def test_every_option_lands_where_aws_puts_it_in_aws_order() -> None:
    record = s3_notification_record(
        "land",
        "a/b c.json",
        "e2",
        7,
        event_name="ObjectCreated:Copy",
        event_version="2.2",
        sequencer="00AB",
        event_time=datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=UTC),
        region="us-east-1",
        principal_id="icefeed",
        configuration_id="crafted",
        encode_slash=True,
    )
    assert list(record) == ["eventVersion", "eventSource", "awsRegion", "eventTime", "eventName", "userIdentity", "s3"]
    assert record["eventVersion"] == "2.2" and record["eventName"] == "ObjectCreated:Copy"
    assert record["awsRegion"] == "us-east-1" and record["userIdentity"] == {"principalId": "icefeed"}
    assert record["eventTime"] == "2026-11-22T01:02:03.456Z"
    assert record["s3"] == {
        "s3SchemaVersion": "1.0",
        "configurationId": "crafted",
        "bucket": {"name": "land", "arn": "arn:aws:s3:::land"},
        "object": {"key": "a%2Fb+c.json", "size": 7, "eTag": "e2", "sequencer": "00AB"},
    }


def test_none_means_the_field_is_left_out() -> None:
    record = s3_notification_record(
        "land", "k", "e", 1, sequencer=None, event_time=None, region=None, principal_id=None, configuration_id=None
    )
    assert record == s3_notification_record("land", "k", "e", 1)


@pytest.mark.parametrize(
    ("when", "written"),
    [
        (datetime(2026, 11, 22, tzinfo=UTC), "2026-11-22T00:00:00.000Z"),
        (datetime(2026, 11, 22, 2, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))), "2026-11-22T00:00:00.999Z"),
        (datetime(2026, 11, 22, 5, 6, 7), "2026-11-22T05:06:07.000Z"),  # naive: taken as UTC
    ],
)
def test_event_time_is_written_in_utc_milliseconds(when: datetime, written: str) -> None:
    assert s3_notification_record("b", "k", "e", 1, event_time=when)["eventTime"] == written


def test_the_body_is_compact_json_holding_the_one_record() -> None:
    body = s3_notification("land", "events/a.json", "e1", 10, configuration_id="icefeed-requeue")
    assert " " not in body
    assert json.loads(body) == {
        "Records": [s3_notification_record("land", "events/a.json", "e1", 10, configuration_id="icefeed-requeue")]
    }


@pytest.mark.parametrize("encode_slash", [False, True])
@pytest.mark.parametrize("key", ["events/a b+c.json", "x/ü/100%.json", "plain", "a//b/"])
def test_parse_message_reads_the_body_back_to_the_same_file(key: str, encode_slash: bool) -> None:
    when = datetime(2026, 11, 22, 1, 2, 3, 456000, tzinfo=UTC)
    body = s3_notification(
        "land", key, '"e1"', 42, sequencer="0055AED6DCD90281E5", event_time=when, encode_slash=encode_slash
    )
    assert parse_message(body) == [
        FileEvent(
            bucket="land",
            key=key,
            size=42,
            etag="e1",
            sequencer="0055AED6DCD90281E5",
            version_id=None,
            event_time=when,
            event_name="ObjectCreated:Put",
            envelope="s3",
        )
    ]
