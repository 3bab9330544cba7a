"""What ``parse_message`` makes of every event fixture and of crafted bodies that probe each rule
of envelope detection and each reason a body is refused, kept in
tests/unit/snapshots/events.json. test_events.py states the rules; this pins every result in
full — the reasons an operator reads in ``rejected_messages`` included.

    python -m tests.unit.events_snapshot     # rewrite the snapshot after a deliberate change
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.snapshot_check import write
from worker.domain.events import parse_message

ROOT = Path(__file__).resolve().parent
SNAPSHOT = ROOT / "snapshots" / "events.json"
FIXTURES = ROOT.parent / "fixtures" / "events"

S3_RECORD = {
    "eventVersion": "2.1",
    "eventSource": "aws:s3",
    "eventName": "ObjectCreated:Put",
    "eventTime": "2026-01-02T03:04:05.678Z",
    "s3": {"bucket": {"name": "landing"}, "object": {"key": "in/a+b%20c.json", "size": 12, "eTag": "e1"}},
}


def _s3(**change: object) -> str:
    record = json.loads(json.dumps(S3_RECORD))
    for path, value in change.items():
        *parents, last = path.split("__")
        node = record
        for p in parents:
            node = node[p]
        node[last] = value
    return json.dumps({"Records": [record]})


def _sns(message: object, **fields: object) -> str:
    return json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": message, **fields})


def _eventbridge(**detail: object) -> str:
    body = {"detail-type": "Object Created", "source": "aws.s3", "time": "2026-01-02T03:04:05Z"}
    body["detail"] = {"bucket": {"name": "landing"}, "object": {"key": "in/x.json", "size": 3, "etag": "e"}, **detail}
    return json.dumps(body)


CRAFTED: dict[str, str | bytes] = {
    "empty": "",
    "blank": " \n\t",
    "bom then event": "\ufeff" + _s3(),
    "bytes with bom": ("\ufeff" + _s3()).encode(),
    "not utf-8": b"\xff\xfe{",
    "not json": "{not json",
    "array": "[1, 2]",
    "null": "null",
    "number": "4.5",
    "string": '"Records"',
    "boolean": "false",
    "object of eleven keys": json.dumps({f"k{i:02}": i for i in range(11)}),
    "object of ten keys": json.dumps({f"k{i:02}": i for i in range(10)}),
    "long key names": json.dumps({"x" * 200: 1}),
    "lower-case records": json.dumps({"records": []}),
    "records null": json.dumps({"Records": None}),
    "records empty": json.dumps({"Records": []}),
    "records of a string": json.dumps({"Records": ["x"]}),
    "service event without Service": json.dumps({"Event": "s3:TestEvent", "Bucket": "b"}),
    "service event unknown": json.dumps({"Service": "Amazon S3", "Event": "s3:Other", "Bucket": "b"}),
    "Event alone": json.dumps({"Event": "s3:TestEvent"}),
    "sns by MessageId only": json.dumps({"Type": "Notification", "MessageId": "m", "Message": _s3()}),
    "sns Type not a string": json.dumps({"Type": 1, "TopicArn": "t", "Message": _s3()}),
    "sns type unknown": json.dumps({"Type": "Mystery", "TopicArn": "t"}),
    "sns message missing": _sns(None),
    "sns message object": _sns({"Records": []}),
    "sns message not json": _sns("{nope"),
    "sns message array": _sns("[1]"),
    "sns message test event": _sns(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})),
    "sns message foreign": _sns(json.dumps({"hello": 1, "there": 2})),
    "sns message bad record": _sns(_s3(eventSource="aws:sqs")),
    "eventbridge by source and detail": json.dumps(
        {"source": "aws.s3", "detail": {"bucket": {"name": "b"}, "object": {"key": "k", "etag": "e"}}}
    ),
    "source without detail": json.dumps({"source": "aws.s3"}),
    "detail without source": json.dumps({"detail": {}}),
    "eventbridge full": _eventbridge(
        object={"key": "in/a+b.json", "size": 3, "etag": '"e"', "sequencer": "00AB", "version-id": "v1"}
    ),
    "eventbridge epoch time": json.dumps({**json.loads(_eventbridge()), "time": 1767323045}),
    "eventbridge bad size": _eventbridge(object={"key": "k", "size": -1}),
    "eventbridge bucket not object": _eventbridge(bucket="b"),
    "eventbridge other detail-type": json.dumps({"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}}),
    "eventbridge other source": json.dumps({"detail-type": "Object Created", "source": "aws.ec2", "detail": {}}),
    "s3 size negative": _s3(s3__object__size=-3),
    "s3 size float": _s3(s3__object__size=1.5),
    "s3 size string": _s3(s3__object__size="12"),
    "s3 key not a string": _s3(s3__object__key=7),
    "s3 key empty": _s3(s3__object__key=""),
    "s3 key bad escape": _s3(s3__object__key="%E0%A4%A"),
    "s3 bucket missing": _s3(s3__bucket={}),
    "s3 object not an object": _s3(s3__object="k"),
    "s3 time not iso": _s3(eventTime="yesterday"),
    "s3 time epoch seconds": _s3(eventTime=5),
    "s3 time boolean": _s3(eventTime=True),
    "s3 time list": _s3(eventTime=[1]),
    "s3 time out of range": _s3(eventTime=1e20),
    "s3 time naive": _s3(eventTime="2026-01-02T03:04:05"),
    "s3 time offset": _s3(eventTime="2026-01-02T05:04:05+02:00"),
    "s3 sequencer and version": _s3(s3__object__sequencer="0055AE", s3__object__versionId="v7"),
    "s3 etag quoted": _s3(s3__object__eTag='"q"'),
    "s3 name without prefix": _s3(eventName="s3:ObjectCreated:Copy"),
    "s3 name removed": _s3(eventName="ObjectRemoved:Delete"),
    "s3 version 2.9": _s3(eventVersion="2.9"),
    "s3 version 3.0": _s3(eventVersion="3.0"),
    "s3 version text": _s3(eventVersion="two"),
    "s3 version number": _s3(eventVersion=2.1),
    "s3 source other": _s3(eventSource="minio:s3"),
    "s3 record not an object": json.dumps({"Records": [S3_RECORD, 7]}),
    "records a number": json.dumps({"Records": 5}),
    "empty object": "{}",
    "key name of 78 characters": json.dumps({"k" * 78: 1}),  # its repr: exactly 80 characters
    "key name of 79 characters": json.dumps({"k" * 79: 1}),
    "service event without prefix": json.dumps({"Service": "Amazon S3", "Event": "TestEvent"}),
    "s3 without s3": json.dumps({"Records": [{k: v for k, v in S3_RECORD.items() if k != "s3"}]}),
    "s3 without eventName": json.dumps({"Records": [{k: v for k, v in S3_RECORD.items() if k != "eventName"}]}),
    "s3 bucket not an object": _s3(s3__bucket="b"),
    "s3 sequencer a number": _s3(s3__object__sequencer=5),
    "s3 versionId a number": _s3(s3__object__versionId=5),
    "s3 etag spelled etag": json.dumps(
        {"Records": [{**S3_RECORD, "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "etag": "lower"}}}]}
    ),
    "s3 etag quotes only": _s3(s3__object__eTag='""'),
    "eventbridge without detail": json.dumps({"detail-type": "Object Created", "source": "aws.s3"}),
    "eventbridge without object": _eventbridge(object=None),
    "eventbridge object without key": _eventbridge(object={"size": 1}),
    "eventbridge bucket without name": _eventbridge(bucket={}),
    "eventbridge time not iso": json.dumps({**json.loads(_eventbridge()), "time": "soon"}),
    "eventbridge sequencer a number": _eventbridge(object={"key": "k", "sequencer": 5}),
    "eventbridge version-id a number": _eventbridge(object={"key": "k", "version-id": 5}),
    "eventbridge reason a number": _eventbridge(reason=5),
    "eventbridge reason PutObject": _eventbridge(reason="PutObject"),
    "eventbridge etag spelled eTag": _eventbridge(object={"key": "k", "eTag": "moto"}),
}


def cases() -> dict[str, str | bytes]:
    fixtures: dict[str, str | bytes] = {
        f"fixture {p.name}": p.read_text(encoding="utf-8") for p in sorted(FIXTURES.glob("*.json"))
    }
    return {**fixtures, **CRAFTED}


def snapshot() -> dict[str, list[str]]:
    out = {name: [repr(result) for result in parse_message(body)] for name, body in cases().items()}
    out["a body that is an integer"] = [repr(r) for r in parse_message(12345)]  # type: ignore[arg-type]
    return out


if __name__ == "__main__":
    write(SNAPSHOT, snapshot())
