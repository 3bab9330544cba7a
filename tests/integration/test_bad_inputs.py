"""The bad-input matrix: every kind of broken file, key, message and delivery gets ONE defined
outcome (ledger status + error class, rows in the Iceberg table read with pyiceberg, message acked,
DLQ empty, a log line where relevant).

All inputs of the main env are staged at once, one worker processes them, and the env is
snapshotted once everything has settled; each case is then asserted on its own. A second env
with a tiny ``ICEFEED_BATCH_MAX_FILE_BYTES`` holds the size-limit case and the stale receipt
handle case (which needs a batch held in flight)."""

from __future__ import annotations

import contextlib
import gzip
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness import Env, make_env, poll, s3_event
from tests.integration.bad_inputs_support import (
    FINAL,
    Snapshot,
    binary_garbage,
    deep_value,
    eventbridge_created,
    gzip_without_trailer,
    jsonl,
    key_of,
    labelled,
    queue_counts,
    send,
    settle,
    snapshot,
    sns_wrapped,
    truncated_gzip,
    wide_row,
)
from worker.localstack import Stack, iceberg_catalog

pytestmark = pytest.mark.integration

WIDE_COLUMNS = 1500
DEEP_LEVELS = 40
MAX_FILE_BYTES = 4096


# -- the case table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCase:
    """One staged object and the outcome the product promises for it."""

    name: str
    key: str
    body: bytes | None  # None: never uploaded (or uploaded specially by the staging code)
    status: str
    error_class: str | None = None
    rows_loaded: int | None = None
    rows: tuple[dict[str, Any], ...] = ()  # rows expected in the table under this key's _source_file
    table: str = "events"
    later: bool = False  # uploaded only once the first wave has been processed
    bug: str | None = None  # observed deviation: the case is a strict xfail


def loaded(name: str, key: str, *ns: int, label: str | None = None) -> FileCase:
    rows = tuple(labelled(label or name, *ns))
    return FileCase(name, key, jsonl(*rows), "LOADED", None, len(rows), rows)


def failed(name: str, key: str, body: bytes, error_class: str = "ParseError", table: str = "events") -> FileCase:
    return FileCase(name, key, body, "FAILED", error_class, None, (), table)


def unsafe(name: str, key: str, body: bytes) -> FileCase:
    """A CSV key no engine reads as written: FAILED UnsafeKey at admission (uploaded in the second
    wave, beside the object its path resolves to)."""
    return FileCase(name, key, body, "FAILED", "UnsafeKey", None, (), "people", later=True)


MIDWAY_ROWS = labelled("midway", *range(500))
DEEP_ROW = {"label": "deep", "n": 0, "deep": deep_value(DEEP_LEVELS)}
WIDE_ROW = wide_row(WIDE_COLUMNS)
DUPCASE_ROW = {"label": "dupcase", "n": 0, "a": 1, "A": 2}
PEOPLE_ROWS = ({"name": "ada", "age": 36}, {"name": "alan", "age": 41})

# Keys that engines interpret (spaces, +, %, unicode, glob characters), each next to a
# "neighbour" that a mis-decoded or globbed path would read instead of (or as well as) it.
NASTY_KEYS = {
    "space_plus": "events/keys/with space+plus.json",
    "percent": "events/keys/100%.json",
    "percent20_literal": "events/keys/a%20b.json",
    "unicode": "events/keys/données été/ü.json",
    "glob_star": "events/keys/star*.json",
    "glob_question": "events/keys/q?.json",
    "glob_bracket": "events/keys/br[ack]et.json",
    "glob_brace": "events/keys/cu{r,l}y.json",
}
NEIGHBOURS = {
    "space_plus": "events/keys/with space plus.json",  # "+" wrongly decoded as a space
    "percent20_literal": "events/keys/a b.json",  # "%20" wrongly decoded a second time
    "glob_star": "events/keys/star-neighbour.json",  # matched by the glob star*.json
    "glob_question": "events/keys/qx.json",  # matched by q?.json
    "glob_bracket": "events/keys/braet.json",  # matched by br[ack]et.json
    "glob_brace": "events/keys/cury.json",  # matched by cu{r,l}y.json
}

RESERVED_ROW = {"label": "reserved", "n": 0, "_SOURCE_FILE": "from the file", "_Batch_Id": "from the file"}
TARGET_ROWS = ({"name": "t1", "age": 1}, {"name": "t2", "age": 2})
LINEAGE = ["_source_file", "_batch_id", "_ingested_at"]

FILE_CASES: list[FileCase] = [
    # 31 columns named like icefeed's lineage columns in another case, in the first batch, which
    # creates the table: quarantined (RESERVED_NAME), the table never gains them, later files load.
    FileCase("reserved_columns", "events/shape/reserved.json", jsonl(RESERVED_ROW), "QUARANTINED", "SchemaConflict", 0),
    # 31b the same, read by the engine (CSV), into a table that exists by then
    FileCase(
        "reserved_columns_csv",
        "people/reserved.csv",
        b"name,age,_Source_File,_INGESTED_AT\nres,1,x,y\n",
        "QUARANTINED",
        "SchemaConflict",
        0,
        (),
        "people",
        later=True,
    ),
    # 31c a file arriving after the quarantined one still loads into the (clean) table
    FileCase(
        "after_reserved",
        "events/shape/after-reserved.json",
        jsonl(*labelled("after_reserved", 1, 2)),
        "LOADED",
        None,
        2,
        tuple(labelled("after_reserved", 1, 2)),
        later=True,
    ),
    # 32 keys with '..', '.' or empty segments: engines rewrite such paths (Sail read the 2 rows of
    # people/x/target.csv for the '..' key, nothing for '.', and refused '//'): FAILED UnsafeKey at
    # admission, acked, never read, never retried; the neighbour they would have read loads once.
    FileCase(
        "people_target",
        "people/x/target.csv",
        b"name,age\nt1,1\nt2,2\n",
        "LOADED",
        None,
        2,
        TARGET_ROWS,
        "people",
        later=True,
    ),
    *(
        unsafe(name, f"people/x/{tail}", f"name,age\n{name},9\n".encode())
        for name, tail in (("key_dotdot_csv", "sub/../target.csv"), ("key_dot_csv", "./single.csv"))
    ),
    unsafe("key_double_slash_csv", "people/x//double.csv", b"name,age\ndbl,3\n"),
    # 32b the same keys on small JSON files, which the worker GETs by their literal key: loaded
    loaded("key_dotdot_json", "events/keys/sub/../plain.json", 1),
    loaded("key_double_slash_json", "events/keys//double.json", 1),
    # 1 malformed JSON line
    failed(
        "malformed_json", "events/bad/malformed.json", b'{"label": "malformed_json", "n": 1}\n{"label": "x", "n": \n'
    ),
    # 2 truncated gzip
    failed("truncated_gzip", "events/bad/truncated.json.gz", truncated_gzip()),
    # 2b gzip whose deflate stream is complete but whose CRC/size trailer is cut off
    failed("gzip_without_trailer", "events/bad/no-trailer.json.gz", gzip_without_trailer()),
    # 3 empty file
    FileCase("empty_file", "events/bad/empty.json", b"", "LOADED", None, 0),
    # 4 header-only CSV
    FileCase("header_only_csv", "people/header-only.csv", b"name,age\n", "LOADED", None, 0, (), "people"),
    # 4b a normal CSV arriving once the header-only one has been loaded into the new table
    FileCase(
        "csv_after_header_only",
        "people/after-header-only.csv",
        b"name,age\nada,36\nalan,41\n",
        "LOADED",
        None,
        2,
        PEOPLE_ROWS,
        "people",
        later=True,
    ),
    # 5 ragged CSV: Sail refuses it ("Encountered unequal lengths between records"), nothing dropped
    failed("ragged_csv", "people/ragged.csv", b"name,age\nrag1,1\nrag2\nrag3,3,extra,more\n", table="people"),
    # 5b only longer rows (extra fields): refused too, not silently truncated to the header
    failed("ragged_csv_extra_fields", "people/ragged-extra.csv", b"name,age\nx1,1,extra\nx2,2\n", table="people"),
    # 6 binary garbage with a .json suffix
    failed("binary_garbage", "events/bad/garbage.json", binary_garbage()),
    # 7 latin-1 bytes in a JSON file: Sail fails the read ("stream did not contain valid UTF-8")
    failed(
        "latin1_text", "events/bad/latin1.json", '{"label": "latin1_text", "n": 1, "s": "café"}\n'.encode("latin-1")
    ),
    # 9 object deleted before processing: crafted event for a key that was never there
    FileCase("object_gone", "events/bad/never-uploaded.json", None, "GONE", "ObjectGone"),
    # 10-13 nasty keys, each loaded under its exact key
    *(loaded(f"key_{name}", key, 1, 2) for name, key in NASTY_KEYS.items()),
    *(loaded(f"neighbour_{name}", key, 7) for name, key in NEIGHBOURS.items()),
    # 26 very deep nesting: the Spark Connect client cannot decode the engine's answer about a
    # schema nested ~35+ levels deep, so the file is FAILED with that reason (not retried)
    FileCase("deep_nesting", "events/shape/deep.json", jsonl(DEEP_ROW), "FAILED", "NestingTooDeep"),
    # 27 very wide row
    FileCase("wide_row", "events/shape/wide.json", jsonl(WIDE_ROW), "LOADED", None, 1, (WIDE_ROW,)),
    # 28 two columns differing only in case: ambiguous for Spark (the product's CASE_CLASH is
    # breaking), so quarantined with both values kept in the file; never silently merged or dropped
    FileCase(
        "dupcase_columns",
        "events/shape/dupcase.json",
        jsonl(DUPCASE_ROW),
        "QUARANTINED",
        "SchemaConflict",
        0,
    ),
    # 29 fails mid-way: 500 good lines, then garbage; no partial load
    failed("fails_midway", "events/bad/midway.json", jsonl(*MIDWAY_ROWS) + b"garbage{\n"),
    # controls: plain files next to the bad ones load normally
    loaded("control_json", "events/ok/plain.json", 1, 2, 3),
    FileCase(
        "control_gzip",
        "events/ok/plain.json.gz",
        gzip.compress(jsonl(*labelled("control_gzip", 1, 2)), mtime=0),
        "LOADED",
        None,
        2,
        tuple(labelled("control_gzip", 1, 2)),
    ),
    # 20/21/23 (objects uploaded by the staging code; a second event arrives through the envelope)
    FileCase("sns_wrapped", "events/envelopes/via sns+plus.json", None, "LOADED", None, 2),
    FileCase("eventbridge", "events/envelopes/via eventbridge ü.json", None, "LOADED", None, 2),
    FileCase("multipart", "events/mp/multipart.json", None, "LOADED", None, 3),
]
CASES = {c.name: c for c in FILE_CASES}
BROKEN_KEYS = {c.key for c in FILE_CASES if c.bug}
ENVELOPE_ROWS = {
    "sns_wrapped": labelled("sns_wrapped", 1, 2),
    "eventbridge": labelled("eventbridge", 1, 2),
    "multipart": labelled("multipart", 1, 2, 3),
}

REUPLOAD_KEY = "events/reup/same.json"
REUPLOAD_V1 = labelled("reupload_v1", 1, 2)
REUPLOAD_V2 = labelled("reupload_v2", 3, 4, 5)
STALE_KEY = "events/reup/stale.json"
STALE_V1 = labelled("stale_v1", 1)
STALE_V2 = labelled("stale_v2", 2, 3)
UNROUTED_KEY = "elsewhere/x.json"
OTHER_BUCKET = "unrouted-other-bucket"
LEDGER_ROWS = len(FILE_CASES) + 2 + 2  # + two versions of REUPLOAD_KEY and of STALE_KEY


def xfail_if_broken(c: FileCase) -> Any:
    return [pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else []


def rows_of_case(c: FileCase) -> tuple[dict[str, Any], ...]:
    return tuple(ENVELOPE_ROWS[c.name]) if c.name in ENVELOPE_ROWS else c.rows


# -- the main env --------------------------------------------------------------------------------


def stage(env: Env) -> tuple[dict[str, str], dict[str, str]]:
    """Upload every object and send every crafted message, before any worker runs."""
    sent: dict[str, str] = {}
    etags: dict[str, str] = {}
    for c in FILE_CASES:
        if c.body is not None and not c.later:
            etags[c.name] = env.put(c.key, c.body)

    # 23 multipart upload: S3 emits two events (Put + CompleteMultipartUpload) with one eTag.
    key = CASES["multipart"].key
    mp = env.s3.create_multipart_upload(Bucket=env.bucket, Key=key)
    part = env.s3.upload_part(
        Bucket=env.bucket, Key=key, UploadId=mp["UploadId"], PartNumber=1, Body=jsonl(*ENVELOPE_ROWS["multipart"])
    )
    done = env.s3.complete_multipart_upload(
        Bucket=env.bucket,
        Key=key,
        UploadId=mp["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    etags["multipart"] = str(done["ETag"]).strip('"')

    # 20 SNS-wrapped and 21 EventBridge events for real uploaded objects.
    for name, wrap in (
        ("sns_wrapped", lambda k, e, n: sns_wrapped(s3_event(env.bucket, k, e, n))),
        ("eventbridge", lambda k, e, n: eventbridge_created(env.bucket, k, e, n)),
    ):
        body = jsonl(*ENVELOPE_ROWS[name])
        etags[name] = env.put(CASES[name].key, body)
        sent[name] = send(env, wrap(CASES[name].key, etags[name], len(body)))

    # 9 object gone: an event for a key that does not exist.
    sent["object_gone"] = send(env, s3_event(env.bucket, CASES["object_gone"].key, "0" * 32, 42))

    # 25 stale etag: v1 then v2 before any worker runs; plus a crafted event carrying v1's etag.
    etags["stale_v1"] = env.put(STALE_KEY, jsonl(*STALE_V1))
    etags["stale_v2"] = env.put(STALE_KEY, jsonl(*STALE_V2))
    sent["stale_etag"] = send(env, s3_event(env.bucket, STALE_KEY, etags["stale_v1"], len(jsonl(*STALE_V1))))

    # 24 re-upload: v1 now, v2 once v1 is loaded (see the fixture).
    etags["reupload_v1"] = env.put(REUPLOAD_KEY, jsonl(*REUPLOAD_V1))

    # 14 unrouted prefix (the notification filter would never send it: crafted), 15 other bucket.
    unrouted_etag = env.put(UNROUTED_KEY, jsonl(*labelled("unrouted", 1)))
    sent["unrouted_prefix"] = send(env, s3_event(env.bucket, UNROUTED_KEY, unrouted_etag, 10))
    sent["unrouted_bucket"] = send(env, s3_event(OTHER_BUCKET, "events/x.json", "1" * 32, 10))

    # 16-19, 22 messages that are not (usable) S3 events.
    sent["non_json"] = send(env, "this is not json {")
    sent["not_s3_event"] = send(env, json.dumps({"hello": "world", "items": [1, 2]}))
    sent["test_event"] = send(
        env,
        json.dumps(
            {
                "Service": "Amazon S3",
                "Event": "s3:TestEvent",
                "Time": "2026-11-22T00:00:00.000Z",
                "Bucket": env.bucket,
                "RequestId": "5582815E1AEA5ADF",
                "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
            }
        ),
    )
    sent["object_removed"] = send(
        env, s3_event(env.bucket, CASES["control_json"].key, etags["control_json"], 10, name="ObjectRemoved:Delete")
    )
    sent["event_version_3"] = send(
        env, s3_event(env.bucket, "events/envelopes/v3-never-uploaded.json", "2" * 32, 10, version="3.0")
    )
    return sent, etags


@pytest.fixture(scope="module")
def snap(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshot]:
    env = make_env(stack, tmp_path_factory.mktemp("bad-inputs"), "bi" + uuid.uuid4().hex[:8])
    try:
        env.migrate()
        sent, etags = stage(env)
        env.start_worker("bad")

        # Second wave, once the first one reached these files: v2 of the re-uploaded key (24), and
        # a normal CSV into the table that the header-only CSV created (4b).
        def first_wave_done() -> bool:
            final = {(f["key"], f["etag"]) for f in env.files() if f["status"] in FINAL}
            return (REUPLOAD_KEY, etags["reupload_v1"]) in final and (
                CASES["header_only_csv"].key,
                etags["header_only_csv"],
            ) in final

        poll(first_wave_done, 90, "the first wave to reach the re-uploaded key and the header-only CSV", interval=0.2)
        etags["reupload_v2"] = env.put(REUPLOAD_KEY, jsonl(*REUPLOAD_V2))
        for c in FILE_CASES:
            if c.later and c.body is not None:
                etags[c.name] = env.put(c.key, c.body)
        settled = settle(env, LEDGER_ROWS, timeout=120)
        yield snapshot(env, settled, ("events", "people"), sent=sent, etags=etags)
    finally:
        env.close()


def test_everything_settled_and_the_worker_survived(snap: Snapshot) -> None:
    assert snap.settled, "queue not drained / files still CLAIMED at the deadline"
    assert snap.alive_before_stop, snap.raw_logs[-3000:]
    assert snap.exit_codes == [0]  # SIGTERM: drained and exited cleanly
    assert snap.depth == 0
    assert not snap.log("admit_failed") and not snap.log("batch_crashed") and not snap.log("batch_lineage_mismatch")


def test_nothing_but_the_known_broken_cases_is_dead_lettered_or_stuck(snap: Snapshot) -> None:
    dead = [key_of(b) or b[:200] for b in snap.dlq_bodies]
    assert len(dead) == snap.dlq_depth
    assert set(dead) <= BROKEN_KEYS, dead
    stuck = [(f["key"], f["status"]) for f in snap.files if f["status"] not in FINAL and f["key"] not in BROKEN_KEYS]
    assert stuck == []
    assert {b["status"] for b in snap.batches} <= {"COMMITTED", "ABORTED"}


def test_dlq_is_empty_and_no_file_is_stuck(snap: Snapshot) -> None:
    assert snap.dlq_depth == 0, [key_of(b) for b in snap.dlq_bodies]
    assert [(f["key"], f["status"]) for f in snap.files if f["status"] in {"PENDING", "CLAIMED"}] == []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=xfail_if_broken(c)) for c in FILE_CASES])
def test_file_outcome(snap: Snapshot, case: FileCase) -> None:
    f = snap.one(case.key)
    fields = ("status", "error_class", "rows_loaded", "attempts", "events_seen", "error_message")
    context = ({k: f[k] for k in fields}, snap.lines_about(case.key))
    outcome = (f["status"], f["error_class"], f["rows_loaded"])
    assert outcome == (case.status, case.error_class, case.rows_loaded), context
    # Exactly the file's own rows under its exact _source_file (decoded s3://bucket/key).
    rows = rows_of_case(case)
    columns = set(rows[0]) if rows else set()
    expected = Counter(json.dumps(r, sort_keys=True) for r in rows)
    got = Counter(
        json.dumps({k: v for k, v in r.items() if k in columns}, sort_keys=True)
        for r in snap.rows_of(case.key, case.table)
    )
    assert got == expected, context
    # Every message that named this key was acked (none requeued to death, none in the DLQ).
    ids = snap.message_ids_for_key(case.key)
    assert ids, context
    assert all(snap.acked(i) for i in ids), context
    assert case.key not in {key_of(b) for b in snap.dlq_bodies}


@pytest.mark.parametrize(
    "name",
    ["malformed_json", "truncated_gzip", "gzip_without_trailer", "binary_garbage", "latin1_text", "fails_midway"],
)
def test_failed_file_is_logged_and_never_partially_loaded(snap: Snapshot, name: str) -> None:
    key = CASES[name].key
    f = snap.one(key)
    assert snap.rows_of(key) == []
    assert snap.log("file_failed", key=key, error_class="ParseError"), snap.lines_about(key)
    assert f["error_message"] and "error" in f["error_message"].lower()
    # Singled out at inference (its batch may have committed the other files) or by bisection:
    # either way no row of it in the table, and no row anywhere of an uncommitted batch.
    committed = {str(b["id"]) for b in snap.batches if b["status"] == "COMMITTED"}
    assert {r["_batch_id"] for r in snap.tables["events"]} <= committed


def test_fails_midway_loads_none_of_its_500_good_rows(snap: Snapshot) -> None:
    assert not [r for r in snap.tables["events"] if r.get("label") == "midway"]


def test_gone_object_is_recorded_at_its_first_read_and_not_retried(snap: Snapshot) -> None:
    key = CASES["object_gone"].key
    f = snap.one(key)
    # A small JSON file is not HEADed at admission: the worker's GET finds it gone, once.
    assert f["attempts"] <= 1 and (f["status"], f["rows_loaded"]) == ("GONE", None), snap.lines_about(key)
    assert snap.log("file_not_loadable", key=key, status="GONE")
    assert snap.acked(snap.sent["object_gone"])


@pytest.mark.parametrize("name", sorted(NASTY_KEYS))
def test_nasty_key_reads_only_its_own_object(snap: Snapshot, name: str) -> None:
    key = NASTY_KEYS[name]
    sources = Counter(r["_source_file"] for r in snap.tables["events"] if r.get("label") == f"key_{name}")
    assert sources == Counter({snap.uri(key): 2})
    assert snap.labels_of(key) == Counter({(f"key_{name}", 1): 1, (f"key_{name}", 2): 1})
    neighbour = NEIGHBOURS.get(name)
    if neighbour:
        assert snap.labels_of(neighbour) == Counter({(f"neighbour_{name}", 7): 1})


def test_unrouted_prefix_is_acked_not_registered(snap: Snapshot) -> None:
    mid = snap.sent["unrouted_prefix"]
    assert snap.ledger(UNROUTED_KEY) == []
    assert snap.log("file_unrouted", message_id=mid, bucket=snap.bucket, key=UNROUTED_KEY)
    assert snap.acked(mid)


def test_unrouted_bucket_is_acked_not_registered(snap: Snapshot) -> None:
    mid = snap.sent["unrouted_bucket"]
    assert not [f for f in snap.files if f["bucket"] == OTHER_BUCKET]
    assert snap.log("file_unrouted", message_id=mid, bucket=OTHER_BUCKET, key="events/x.json")
    assert snap.acked(mid)


@pytest.mark.parametrize(
    ("name", "reason_part"),
    [
        ("non_json", "body is not JSON"),
        ("not_s3_event", "not an S3 event notification"),
        ("event_version_3", "unsupported eventVersion 3.0"),
    ],
)
def test_unusable_message_is_kept_in_rejected_messages(snap: Snapshot, name: str, reason_part: str) -> None:
    mid = snap.sent[name]
    rows = [r for r in snap.rejected if r["message_id"] == mid]
    assert len(rows) == 1, snap.rejected
    assert reason_part in rows[0]["reason"]
    assert snap.log("message_rejected", message_id=mid)
    assert snap.acked(mid)


def test_rejected_bodies_are_kept_verbatim(snap: Snapshot) -> None:
    by_id = {r["message_id"]: r["body"] for r in snap.rejected}
    assert by_id[snap.sent["non_json"]] == "this is not json {"
    assert json.loads(by_id[snap.sent["not_s3_event"]]) == {"hello": "world", "items": [1, 2]}
    assert json.loads(by_id[snap.sent["event_version_3"]])["Records"][0]["eventVersion"] == "3.0"
    # Nothing else was rejected: real notifications, envelopes and ignorable events were understood.
    assert set(by_id) == {snap.sent["non_json"], snap.sent["not_s3_event"], snap.sent["event_version_3"]}
    assert snap.ledger("events/envelopes/v3-never-uploaded.json") == []


def test_s3_test_event_is_ignored(snap: Snapshot) -> None:
    mid = snap.sent["test_event"]
    assert snap.log("record_ignored", message_id=mid, reason="s3:TestEvent")
    assert snap.acked(mid)
    # The TestEvent that configuring the notification sent, too.
    assert len(snap.log("record_ignored", reason="s3:TestEvent")) == 2, snap.log("record_ignored")


def test_object_removed_event_is_ignored(snap: Snapshot) -> None:
    mid = snap.sent["object_removed"]
    lines = snap.log("record_ignored", message_id=mid)
    assert [line["reason"] for line in lines] == ["not an ObjectCreated event: ObjectRemoved:Delete"]
    assert snap.acked(mid)
    assert snap.one(CASES["control_json"].key)["status"] == "LOADED"  # a Delete event changes nothing


@pytest.mark.parametrize("name", ["sns_wrapped", "eventbridge"])
def test_envelope_event_is_understood_as_the_same_file(snap: Snapshot, name: str) -> None:
    mid = snap.sent[name]
    key = CASES[name].key
    assert mid in snap.message_ids_for_key(key)  # the envelope named exactly this (decoded) key
    f = snap.one(key)  # and collapsed onto the ledger row of the real notification
    assert (f["etag"], f["status"], f["rows_loaded"]) == (snap.etags[name], "LOADED", 2)
    assert snap.labels_of(key) == Counter((name, n) for n in (1, 2))
    assert snap.acked(mid)


def test_multipart_upload_loads_once(snap: Snapshot) -> None:
    key = CASES["multipart"].key
    f = snap.one(key)
    assert f["etag"] == snap.etags["multipart"] and f["etag"].endswith("-1")
    assert len(snap.message_ids_for_key(key)) == 2  # Put and CompleteMultipartUpload
    assert snap.labels_of(key) == Counter(("multipart", n) for n in (1, 2, 3))


def test_reupload_keeps_both_versions(snap: Snapshot) -> None:
    rows = sorted(snap.ledger(REUPLOAD_KEY), key=lambda f: f["id"])
    assert [(f["etag"], f["status"], f["rows_loaded"]) for f in rows] == [
        (snap.etags["reupload_v1"], "LOADED", 2),
        (snap.etags["reupload_v2"], "LOADED", 3),
    ]
    assert rows[0]["batch_id"] != rows[1]["batch_id"]
    assert snap.labels_of(REUPLOAD_KEY) == Counter(
        [("reupload_v1", 1), ("reupload_v1", 2), ("reupload_v2", 3), ("reupload_v2", 4), ("reupload_v2", 5)]
    )


def test_stale_etag_is_skipped_as_superseded(snap: Snapshot) -> None:
    by_etag = {f["etag"]: f for f in snap.ledger(STALE_KEY)}
    assert set(by_etag) == {snap.etags["stale_v1"], snap.etags["stale_v2"]}
    old, new = by_etag[snap.etags["stale_v1"]], by_etag[snap.etags["stale_v2"]]
    # Caught either by the GET's If-Match (a small JSON file) or, had it been HEADed, at admission.
    assert (old["status"], old["error_class"], old["rows_loaded"]) == ("SKIPPED", "Superseded", None)
    assert old["attempts"] <= 1
    assert (new["status"], new["rows_loaded"]) == ("LOADED", 2)
    assert snap.labels_of(STALE_KEY) == Counter([("stale_v2", 2), ("stale_v2", 3)])
    assert snap.sent["stale_etag"] in snap.message_ids_for_key(STALE_KEY)
    assert snap.acked(snap.sent["stale_etag"])


def test_wide_row_is_loaded_exactly(snap: Snapshot) -> None:
    rows = snap.rows_of(CASES["wide_row"].key)
    assert len(rows) == 1
    assert {k: rows[0][k] for k in WIDE_ROW} == WIDE_ROW


def test_deep_nesting_fails_with_a_reason_and_no_retries(snap: Snapshot) -> None:
    key = CASES["deep_nesting"].key
    f = snap.one(key)
    assert snap.rows_of(key) == [] and f["status"] == "FAILED"
    assert "nested too deep" in f["error_message"]
    assert key not in {key_of(b) for b in snap.dlq_bodies}


def test_case_colliding_columns_are_quarantined_not_lost(snap: Snapshot) -> None:
    key = CASES["dupcase_columns"].key
    assert snap.rows_of(key) == []
    assert snap.log("file_quarantined", key=key), snap.lines_about(key)
    assert key not in {key_of(b) for b in snap.dlq_bodies}


UNSAFE_CASES = ["key_dotdot_csv", "key_dot_csv", "key_double_slash_csv"]


@pytest.mark.parametrize("name", UNSAFE_CASES)
def test_unsafe_key_fails_at_admission_never_read_nor_retried(snap: Snapshot, name: str) -> None:
    case = CASES[name]
    f = snap.one(case.key)
    assert (f["status"], f["error_class"], f["batch_id"], f["attempts"]) == ("FAILED", "UnsafeKey", None, 0)
    assert "path segment" in f["error_message"]
    assert snap.log("file_not_loadable", key=case.key, status="FAILED")
    ids = snap.message_ids_for_key(case.key)
    assert len(ids) == 1 and all(snap.acked(i) and not snap.requeued(i) for i in ids)


def test_the_object_a_dotdot_key_points_at_loads_once_under_its_own_name(snap: Snapshot) -> None:
    rows = [r for r in snap.tables["people"] if r.get("name") in ("t1", "t2", "key_dotdot_csv", "key_dot_csv", "dbl")]
    assert Counter((r["name"], r["age"], r["_source_file"]) for r in rows) == Counter(
        (r["name"], r["age"], snap.uri("people/x/target.csv")) for r in TARGET_ROWS
    )


@pytest.mark.parametrize("table", ["events", "people"])
def test_a_file_with_lineage_named_columns_leaves_the_table_clean(snap: Snapshot, table: str) -> None:
    """pyiceberg's view of the table: icefeed's columns once each, nothing that folds onto them."""
    names = snap.columns[table]
    assert [n for n in names if n.lower() in LINEAGE] == LINEAGE, names
    assert not [n for n in names if n.lower() in ("_rescued_data",)]
    assert len({n.lower() for n in names}) == len(names), names
    key = CASES["reserved_columns" if table == "events" else "reserved_columns_csv"].key
    f = snap.one(key)
    assert "reserved name at" in f["error_message"] and "icefeed writes its own column" in f["error_message"]
    assert snap.log("file_quarantined", key=key), snap.lines_about(key)
    # Every batch committed or was released; none is stuck on an ambiguous table.
    assert {b["status"] for b in snap.batches} <= {"COMMITTED", "ABORTED"}


def test_files_after_the_reserved_one_still_load(snap: Snapshot) -> None:
    assert snap.labels_of(CASES["after_reserved"].key) == Counter({("after_reserved", 1): 1, ("after_reserved", 2): 1})
    assert snap.one(CASES["csv_after_header_only"].key)["status"] == "LOADED"


def _expected_rows(snap: Snapshot, table: str, skip: set[str]) -> Counter[tuple[Any, ...]]:
    expected: Counter[tuple[Any, ...]] = Counter()
    for c in FILE_CASES:
        if c.table == table and c.status == "LOADED" and c.key not in skip:
            expected.update(_row_id(table, r, snap.uri(c.key)) for r in rows_of_case(c))
    if table == "events":
        expected.update(_row_id(table, r, snap.uri(REUPLOAD_KEY)) for r in REUPLOAD_V1 + REUPLOAD_V2)
        expected.update(_row_id(table, r, snap.uri(STALE_KEY)) for r in STALE_V2)
    return expected


def _row_id(table: str, row: dict[str, Any], source: str) -> tuple[Any, ...]:
    if table == "people":
        return (row.get("name"), row.get("age"), source)
    return (row.get("label"), row.get("n"), source)


@pytest.mark.parametrize("table", ["events", "people"])
def test_table_holds_exactly_the_expected_rows_of_the_working_cases(snap: Snapshot, table: str) -> None:
    """The whole table, as a multiset, for every case that behaves; rows of the known-broken
    cases are checked by their own (xfail) tests and must not appear under any other key."""
    broken = {snap.uri(k) for k in BROKEN_KEYS}
    got = Counter(_row_id(table, r, r["_source_file"]) for r in snap.tables[table] if r["_source_file"] not in broken)
    assert got == _expected_rows(snap, table, BROKEN_KEYS)
    committed = {str(b["id"]) for b in snap.batches if b["status"] == "COMMITTED"}
    assert {r["_batch_id"] for r in snap.tables[table]} <= committed
    assert all(r["_ingested_at"] is not None for r in snap.tables[table])


def test_tables_hold_exactly_the_expected_rows(snap: Snapshot) -> None:
    for table in ("events", "people"):
        got = Counter(_row_id(table, r, r["_source_file"]) for r in snap.tables[table])
        assert got == _expected_rows(snap, table, set()), table


# -- the second env: size limit and stale receipt handles ------------------------------------------


BIG_KEY = "events/limits/too-large.json"
BIG_BODY = jsonl(*labelled("too_large", *range(300)))
HANDLE_KEY = "events/handles/stale-handle.json"
HANDLE_ROWS = labelled("stale_handle", 1, 2)
PURGED_KEY = "events/handles/purged.json"
PURGED_ROWS = labelled("purged", 1, 2, 3)


@pytest.fixture(scope="module")
def snap_b(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshot]:
    """Case 8 (file over ICEFEED_BATCH_MAX_FILE_BYTES) and case 30 (stale receipt handles).

    Case 30, step by step: we receive the notification of HANDLE_KEY ourselves with a 1 s
    visibility (handle H1) and let it lapse; the worker receives it again (handle H2) and claims a
    batch that a fault point holds in flight. While it is held, (a) we delete the message with
    the stale H1 (moto deletes it; real SQS may or may not) and (b) we purge the queue, so the
    worker's own delete of PURGED_KEY's message is reported as Failed (ReceiptHandleIsInvalid).
    Then the batch is released, and finally the HANDLE_KEY notification is delivered again, as
    real SQS would when a stale-handle delete did not take."""
    tmp = tmp_path_factory.mktemp("bad-inputs-limits")
    env = make_env(stack, tmp, "bl" + uuid.uuid4().hex[:8])
    try:
        env.migrate()
        sent: dict[str, str] = {}
        etags = {
            "too_large": env.put(BIG_KEY, BIG_BODY),
            "stale_handle": env.put(HANDLE_KEY, jsonl(*HANDLE_ROWS)),
            "purged": env.put(PURGED_KEY, jsonl(*PURGED_ROWS)),
        }
        assert len(BIG_BODY) > MAX_FILE_BYTES

        stale_handle = stale_body = None
        seen: dict[str, str] = {}
        for _ in range(20):
            got = env.sqs.receive_message(
                QueueUrl=env.prov.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=1, WaitTimeSeconds=0
            ).get("Messages", [])
            for m in got:
                key = key_of(m["Body"])
                if key:
                    seen[key] = m["MessageId"]
                if key == HANDLE_KEY:
                    stale_handle, stale_body = m["ReceiptHandle"], m["Body"]
            if stale_handle:
                break
        assert stale_handle and stale_body, "could not receive the notification of HANDLE_KEY"
        poll(lambda: queue_counts(env) == (4, 0), 30, "our 1 s visibility to lapse", interval=0.2)

        gate = tmp / "gate"
        env.start_worker(
            "limits", ICEFEED_BATCH_MAX_FILE_BYTES=str(MAX_FILE_BYTES), ICEFEED_FAULTS=f"after_claim=hold:{gate}"
        )

        def held() -> bool:
            if not (gate / "after_claim.reached").exists() or queue_counts(env) != (0, 2):
                return False
            return any(f["key"] == BIG_KEY and f["status"] == "FAILED" for f in env.files())

        poll(held, 60, "a batch held in flight with both messages received", interval=0.1)
        env.sqs.delete_message(QueueUrl=env.prov.queue_url, ReceiptHandle=stale_handle)  # stale handle H1
        env.sqs.purge_queue(QueueUrl=env.prov.queue_url)
        (gate / "after_claim.release").touch()
        env.wait_files(3, timeout=60)
        # The held message is acked; the purged one's delete is reported failed (logged as such,
        # never as acked).
        for key, event in ((HANDLE_KEY, '"message_acked"'), (PURGED_KEY, '"message_delete_failed"')):
            mid = seen[key]
            poll(
                lambda mid=mid, event=event: any(
                    event in line and mid in line for line in env.worker_logs().splitlines()
                ),
                30,
                f"the worker to settle {key}",
            )
        sent["handle_message"], sent["purged_message"] = seen[HANDLE_KEY], seen[PURGED_KEY]
        with contextlib.suppress(AssertionError):  # asserted by the test; here only waited for
            poll(
                lambda: any(
                    '"message_delete_failed"' in line and sent["purged_message"] in line
                    for line in env.worker_logs().splitlines()
                ),
                10,
                "the failed delete to be logged",
            )

        # The delivery that real SQS makes when a stale-handle delete did not take.
        sent["redelivery"] = send(env, stale_body)
        poll(
            lambda: any(
                '"message_acked"' in line and sent["redelivery"] in line for line in env.worker_logs().splitlines()
            ),
            30,
            "the redelivered message to be acked",
        )
        settled = settle(env, 3, timeout=30)
        yield snapshot(env, settled, ("events",), sent=sent, etags=etags)
    finally:
        env.close()


def test_file_over_the_size_limit_fails_without_being_read(snap_b: Snapshot) -> None:
    f = snap_b.one(BIG_KEY)
    assert (f["status"], f["error_class"], f["rows_loaded"]) == ("FAILED", "FileTooLarge", None)
    assert "ICEFEED_BATCH_MAX_FILE_BYTES" in f["error_message"]
    assert f["size_bytes"] == len(BIG_BODY)
    # Never read: never claimed by a batch, no rows.
    assert (f["batch_id"], f["attempts"]) == (None, 0)
    assert snap_b.rows_of(BIG_KEY) == []
    assert snap_b.log("file_not_loadable", key=BIG_KEY, status="FAILED")
    assert all(snap_b.acked(m) for m in snap_b.message_ids_for_key(BIG_KEY))


def test_stale_receipt_handle_and_failed_delete_still_load_exactly_once(snap_b: Snapshot) -> None:
    handle, purged = snap_b.one(HANDLE_KEY), snap_b.one(PURGED_KEY)
    assert (handle["status"], handle["rows_loaded"]) == ("LOADED", 2)
    assert (purged["status"], purged["rows_loaded"]) == ("LOADED", 3)
    # Original notification + the redelivery; the redelivery found the file LOADED and was acked.
    assert handle["events_seen"] == 2
    assert snap_b.log("file_already_known", message_id=snap_b.sent["redelivery"], status="LOADED")
    assert snap_b.acked(snap_b.sent["redelivery"])
    # The worker's delete after the purge was reported as failed, and it carried on.
    assert snap_b.log("message_delete_failed", message_id=snap_b.sent["purged_message"])
    rows = Counter((r["label"], r["n"], r["_source_file"]) for r in snap_b.tables["events"])
    assert rows == Counter(
        [(r["label"], r["n"], snap_b.uri(HANDLE_KEY)) for r in HANDLE_ROWS]
        + [(r["label"], r["n"], snap_b.uri(PURGED_KEY)) for r in PURGED_ROWS]
    )


def test_second_worker_survived_and_exits_zero(snap_b: Snapshot) -> None:
    assert snap_b.settled
    assert snap_b.alive_before_stop
    assert snap_b.exit_codes == [0]
    assert (snap_b.depth, snap_b.dlq_depth) == (0, 0)
    assert not [f for f in snap_b.files if f["status"] in {"PENDING", "CLAIMED"}]


# -- a table made ambiguous before this fix: `icefeed check` names it and the repair works -----------------


def test_icefeed_check_reports_an_ambiguous_table_and_its_repair_makes_it_loadable(env: Env) -> None:
    """A table created (before reserved names were compared ignoring case) with ``_SOURCE_FILE`` and
    ``_Batch_Id`` beside icefeed's own columns: every append and recovery probe fails on it. `icefeed
    check` says so with the repair; after the documented rename, files load into it again."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType, TimestamptzType

    env.migrate()
    names = ["label", "_SOURCE_FILE", "_Batch_Id", "_source_file", "_batch_id"]
    fields = [NestedField(i + 1, n, StringType(), required=False) for i, n in enumerate(names)]
    fields.append(NestedField(len(names) + 1, "_ingested_at", TimestamptzType(), required=False))
    catalog = iceberg_catalog(env.stack.moto_url)
    catalog.create_table(f"{env.db}.events", Schema(*fields), location=f"s3://{env.warehouse}/{env.db}/events")

    bad = env.cli("check")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failed = {line.split()[1]: line for line in bad.stdout.splitlines() if line.startswith("FAIL")}
    assert set(failed) == {"catalog"}, bad.stdout
    line = failed["catalog"]
    assert f"glue.{env.db}.events: column _SOURCE_FILE collides with icefeed's column _source_file" in line
    assert "column _Batch_Id collides with icefeed's column _batch_id" in line
    assert "rename_column('_Batch_Id', '_Batch_Id_data')" in line

    with env.table("events").update_schema() as update:  # the repair, as `icefeed check` words it
        update.rename_column("_SOURCE_FILE", "_SOURCE_FILE_data")
        update.rename_column("_Batch_Id", "_Batch_Id_data")
    ok = env.cli("check")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    env.put("events/after-repair.json", jsonl(*labelled("after_repair", 1, 2)))
    env.start_worker("repaired")
    rows = env.wait_files(1, {"LOADED"}, timeout=60)
    assert [(r["key"], r["rows_loaded"]) for r in rows] == [("events/after-repair.json", 2)]
    got = [(r["label"], r["_SOURCE_FILE_data"], r["_source_file"]) for r in env.table_rows("events")]
    assert sorted(got) == [("after_repair", None, f"s3://{env.bucket}/events/after-repair.json")] * 2
    assert env.stop_workers() == [0]
