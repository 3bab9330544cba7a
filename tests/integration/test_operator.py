"""Operator commands on the real stack: status / files / file after a real run, retry of a FAILED
file once its cause is fixed, backfill of files whose events were lost, DLQ show and redrive,
preview (which writes nothing), and friendly Spark Connect errors. Tables are checked with
pyiceberg; the ledger with SQL."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from tests.harness import Env, poll
from worker.admin.schema import s3_notification

pytestmark = pytest.mark.integration


def jsonl(*rows: dict[str, Any]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def run(env: Env, *args: str, code: int = 0, **extra: str) -> subprocess.CompletedProcess[str]:
    result = env.cli(*args, **extra)
    assert result.returncode == code, (args, result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_json(env: Env, *args: str, code: int = 0, **extra: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(run(env, *args, "--json", code=code, **extra).stdout)
    return document


def rows_by_source(env: Env, table: str = "events") -> Counter[str]:
    return Counter(r["_source_file"] for r in env.table_rows(table))


def by_key(env: Env) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in env.files()}


def uri(env: Env, key: str) -> str:
    return f"s3://{env.bucket}/{key}"


# --------------------------------------------------------------------------- status, files, file


def test_status_files_and_file_describe_a_real_run(env: Env) -> None:
    env.migrate()
    env.start_worker()
    env.put("events/a.json", jsonl({"id": 1, "price": 1.5}, {"id": 2, "price": 2.5}))
    env.wait_files(1)
    env.put("events/b.json", jsonl({"id": 3, "price": {"amount": 3}}))  # type conflict: QUARANTINED
    env.put("events/c.json", b'{"id": 4, "price": \n')  # unparsable: FAILED
    env.put("events/d.json", jsonl({"id": 5, "price": 5.5}))
    env.wait_files(4)
    env.put("events/a.json", jsonl({"id": 6, "price": 6.5}))  # a second version of a.json
    files = env.wait_files(5)
    assert Counter(f["status"] for f in files) == {"LOADED": 3, "QUARANTINED": 1, "FAILED": 1}

    status = run_json(env, "status", code=1)  # FAILED and QUARANTINED files: look at them
    (events,) = status["ingestions"]
    assert events["ingestion"] == "events"
    assert events["by_status"] == {"LOADED": 3, "QUARANTINED": 1, "FAILED": 1}
    assert (events["rows_today"], events["loaded_today"], events["rows_loaded"]) == (4, 3, 4)
    assert events["last_loaded_at"] is not None
    assert status["oldest_open"] is None and status["stuck_pending"] == 0
    assert status["open_proposals"] == 1
    (queue,) = status["queues"]
    assert queue["name"] == f"q-{env.tag}" and queue["dlq"]["name"] == f"q-{env.tag}-dlq"
    assert queue["dlq"]["messages"] == 0 and queue["dlq"]["max_receive_count"] == 4
    assert any("FAILED" in a and "icefeed files --status failed" in a for a in status["attention"])
    assert any("QUARANTINED" in a and "icefeed schema pending" in a for a in status["attention"])
    text = run(env, "status", code=1).stdout
    assert "ingestion" in text and "rows today" in text and "needs attention:" in text
    assert f"dead-letter queue q-{env.tag}-dlq: 0 message(s)" in text
    quiet = run_json(env, "status", "--ingestion", "typed")  # nothing there: exit 0
    assert quiet["ingestions"] == [] and quiet["attention"] == []

    failed = run_json(env, "files", "--status", "failed")
    assert failed["total"] == 1
    (c,) = failed["files"]
    assert (c["key"], c["status"], c["error_class"]) == ("events/c.json", "FAILED", "ParseError")
    assert c["uri"] == uri(env, "events/c.json")
    listing = run(env, "files", "--status", "failed,quarantined").stdout
    assert "events/c.json" in listing and "ParseError" in listing and "events/b.json" in listing
    assert "2 file(s)" in listing
    assert run_json(env, "files", "--key-prefix", "events/a")["total"] == 2
    assert run_json(env, "files", "--key-prefix", f"s3://{env.bucket}/events/d")["total"] == 1
    assert run_json(env, "files", "--since", "1h")["total"] == 5
    assert run_json(env, "files", "--since", "2099-01-01")["total"] == 0
    newest = run_json(env, "files", "--limit", "2")
    assert newest["total"] == 5 and len(newest["files"]) == 2
    assert "showing the newest 2 of 5" in run(env, "files", "--limit", "2").stdout
    assert run(env, "files", "--status", "done", code=2).stderr.startswith("icefeed files: unknown status 'done'")

    history = run_json(env, "file", uri(env, "events/a.json"))  # both versions, newest current
    assert history["route"] == {"ingestion": "events", "table": f"glue.{env.db}.events", "format": "json"}
    first, second = history["versions"]
    assert (first["status"], first["rows_loaded"], first["current"]) == ("LOADED", 2, False)
    assert (second["status"], second["rows_loaded"], second["current"]) == ("LOADED", 1, True)
    assert second["etag"] == history["object"]["etag"] != first["etag"]
    for v in (first, second):
        assert v["batch_status"] == "COMMITTED" and v["batch_table"] == f"glue.{env.db}.events"
        assert v["attempts"] == 1 and v["events_seen"] == 1
    assert history["attention"] == []
    text = run(env, "file", uri(env, "events/a.json")).stdout
    assert "version 1" in text and "version 2" in text and ", current" in text and "COMMITTED" in text
    bad = run_json(env, "file", uri(env, "events/b.json"), code=1)
    assert bad["versions"][0]["proposal_status"] == "PENDING"
    assert "icefeed schema pending" in bad["attention"][0]
    broken = run(env, "file", uri(env, "events/c.json"), code=1).stdout
    assert "ParseError" in broken and f"icefeed retry {uri(env, 'events/c.json')}" in broken
    unknown = run_json(env, "file", uri(env, "events/never.json"), code=1)
    assert unknown["versions"] == [] and unknown["attention"] == ["not in the ledger and not in S3"]
    assert "not an S3 URI" in run(env, "file", "events/a.json", code=2).stderr
    assert env.stop_workers() == [0]


# --------------------------------------------------------------------------- retry


def test_retry_loads_a_failed_file_once_after_its_cause_is_fixed(env: Env) -> None:
    env.migrate()
    env.start_worker(ICEFEED_BATCH_MAX_FILE_BYTES="200")
    big = jsonl(*({"id": i, "note": "x" * 40} for i in range(6)))
    assert len(big) > 200
    env.put("events/big.json", big)
    env.put("events/small.json", jsonl({"id": 100, "note": "s"}))
    files = {f["key"]: f for f in env.wait_files(2)}
    assert (files["events/big.json"]["status"], files["events/big.json"]["error_class"]) == ("FAILED", "FileTooLarge")
    assert files["events/small.json"]["status"] == "LOADED"

    refused = run(env, "retry", uri(env, "events/small.json"), code=1)
    assert "LOADED" in refused.stdout and "never re-queued" in refused.stdout
    assert "not in the ledger" in run(env, "retry", uri(env, "events/none.json"), code=1).stdout
    assert "either an S3 URI or --failed" in run(env, "retry", code=2).stderr
    assert "not both" in run(env, "retry", uri(env, "events/big.json"), "--failed", code=2).stderr

    assert env.stop_workers() == [0]
    env.start_worker()  # the fix: the default limit
    retried = run_json(env, "retry", uri(env, "events/big.json"))
    (requeued,) = retried["requeued"]
    assert (requeued["uri"], requeued["was"], requeued["was_error_class"]) == (
        uri(env, "events/big.json"),
        "FAILED",
        "FileTooLarge",
    )
    # A re-run while it loads is refused or finds it PENDING again; either way it loads once.
    poll(lambda: by_key(env)["events/big.json"]["status"] == "LOADED", 60, "big.json LOADED")
    row = by_key(env)["events/big.json"]
    assert (row["rows_loaded"], row["attempts"], row["events_seen"]) == (6, 1, 2)
    assert rows_by_source(env) == {uri(env, "events/big.json"): 6, uri(env, "events/small.json"): 1}
    again = run(env, "retry", uri(env, "events/big.json"), code=1)
    assert "a loaded file is never re-queued" in again.stdout
    nothing = run(env, "retry", "--failed")
    assert "nothing to retry" in nothing.stdout
    assert rows_by_source(env)[uri(env, "events/big.json")] == 6
    assert env.stop_workers() == [0]


def test_retry_failed_requeues_every_failed_and_stuck_file(env: Env) -> None:
    env.migrate()
    env.start_worker(ICEFEED_BATCH_MAX_FILE_BYTES="50")
    for n in range(3):
        env.put(f"events/f{n}.json", jsonl({"id": n, "note": "y" * 60}))
    env.wait_files(3)
    assert {f["status"] for f in env.files()} == {"FAILED"}
    assert env.stop_workers() == [0]
    # A PENDING file whose message is gone (say the queue was purged) is stuck.
    env.sql("UPDATE files SET status = 'PENDING', error_class = NULL WHERE key = 'events/f2.json'")
    env.sql("UPDATE files SET last_event_at = now() - interval '2 hours' WHERE key = 'events/f2.json'")
    assert run_json(env, "status", code=1)["stuck_pending"] == 1
    env.start_worker()
    result = run_json(env, "retry", "--failed", "--ingestion", "events")
    assert sorted((f["uri"], f["was"]) for f in result["requeued"]) == [
        (uri(env, "events/f0.json"), "FAILED"),
        (uri(env, "events/f1.json"), "FAILED"),
        (uri(env, "events/f2.json"), "PENDING"),
    ]
    files = env.wait_files(3, {"LOADED"})
    assert all(f["rows_loaded"] == 1 for f in files)
    assert rows_by_source(env) == {uri(env, f"events/f{n}.json"): 1 for n in range(3)}
    assert run_json(env, "retry", "--failed")["requeued"] == []
    assert env.stop_workers() == [0]


# --------------------------------------------------------------------------- backfill


def test_backfill_enqueues_exactly_the_files_whose_events_were_lost(env: Env) -> None:
    env.migrate()
    env.start_worker()
    env.put("events/seen.json", jsonl({"id": 0, "price": 0.5}))
    env.wait_files(1, {"LOADED"})
    assert env.stop_workers() == [0]

    lost = [f"events/2026/lost-{n}.json" for n in range(3)]
    for n, key in enumerate(lost):
        env.put(key, jsonl({"id": 10 + n, "price": 1.0 + n}, {"id": 20 + n, "price": 2.0}))
    env.put("other/readme.txt", b"not routed")
    poll(lambda: env.queue_depth() >= 3, 10, "the lost files' notifications")
    env.sqs.purge_queue(QueueUrl=env.prov.queue_url)  # their events are gone
    assert env.queue_depth() == 0
    missing = run_json(env, "file", uri(env, lost[0]), code=1)
    assert missing["versions"] == [] and f"icefeed backfill {uri(env, lost[0])}" in missing["attention"][0]

    dry = run_json(env, "backfill", f"s3://{env.bucket}", "--dry-run")
    assert (dry["listed"], dry["routed"], dry["unrouted"], dry["sent"]) == (5, 4, 1, 3)
    assert sorted(dry["sent_keys"]) == lost
    assert len(env.files()) == 1 and env.queue_depth() == 0  # a dry run sends nothing

    first = run(env, "backfill", f"s3://{env.bucket}/events/")
    assert "sent 3 notification(s)" in first.stdout and "already in the ledger: 1 (LOADED 1)" in first.stdout
    assert "backfill: listed 4" in first.stderr  # progress
    for key in lost:
        assert key in first.stdout
    # Re-run before any worker has seen the notifications: nothing is sent twice.
    second = run_json(env, "backfill", f"s3://{env.bucket}/events/")
    assert (second["sent"], second["already_known"]) == (0, {"LOADED": 1, "PENDING": 3})
    poll(lambda: env.queue_depth() == 3, 10, "3 notifications in the queue")

    env.start_worker()
    files = {f["key"]: f for f in env.wait_files(4, {"LOADED"})}
    for key in lost:
        assert (files[key]["rows_loaded"], files[key]["events_seen"], files[key]["attempts"]) == (2, 1, 1)
    assert rows_by_source(env) == {uri(env, "events/seen.json"): 1, **{uri(env, k): 2 for k in lost}}
    third = run_json(env, "backfill", f"s3://{env.bucket}/events/2026/", "--since", "1h")
    assert (third["listed"], third["sent"], third["already_known"]) == (3, 0, {"LOADED": 3})
    old = run_json(env, "backfill", f"s3://{env.bucket}/events/", "--since", "2099-01-01T00:00:00Z")
    assert (old["before_since"], old["sent"]) == (4, 0)
    assert "no route reads" in run(env, "backfill", "s3://some-other-bucket/x/", code=2).stderr
    assert "no route reads keys under" in run(env, "backfill", f"s3://{env.bucket}/other/", code=2).stderr
    assert env.stop_workers() == [0]


# --------------------------------------------------------------------------- dead-letter queue


def dead_letter(env: Env, expected: int) -> None:
    """Receive (and never delete) until the queue's redrive policy moves the messages to the DLQ,
    as happens when no worker can settle them within maxReceiveCount receives."""

    def moved() -> bool:
        env.sqs.receive_message(
            QueueUrl=env.prov.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        )
        return env.queue_depth(env.prov.dlq_url) >= expected

    poll(moved, 30, f"{expected} message(s) in the DLQ")


def visible(env: Env, url: str) -> int:
    attrs = env.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def test_dlq_redrive_loads_a_dead_lettered_file_once_and_drops_settled_messages(env: Env) -> None:
    env.migrate()
    env.start_worker()
    done_etag = env.put("events/done.json", jsonl({"id": 1, "price": 1.0}))
    env.wait_files(1, {"LOADED"})
    assert env.stop_workers() == [0]

    # The cause: no worker could take poison.json's event before it ran out of receives.
    env.put("events/poison.json", jsonl({"id": 2, "price": 2.0}, {"id": 3, "price": 3.0}))
    dead_letter(env, 1)
    # A stale copy of an event whose file is long loaded, and a message that is not an event.
    env.sqs.send_message(
        QueueUrl=env.prov.dlq_url, MessageBody=s3_notification(env.bucket, "events/done.json", done_etag, 20)
    )
    env.sqs.send_message(QueueUrl=env.prov.dlq_url, MessageBody="this is not an S3 event")
    assert env.queue_depth(env.prov.dlq_url) == 3

    shown = run_json(env, "dlq", "show", code=1)
    (dlq,) = shown["dlqs"]
    assert dlq["name"] == f"q-{env.tag}-dlq" and dlq["source"] == env.prov.queue_url
    by_file = {m["files"][0]["uri"] if m["files"] else "junk": m for m in dlq["messages"]}
    assert set(by_file) == {uri(env, "events/poison.json"), uri(env, "events/done.json"), "junk"}
    poison = by_file[uri(env, "events/poison.json")]
    assert (poison["files"][0]["state"], poison["action"]) == ("not in the ledger", "send")
    assert poison["receive_count"] >= 4
    done = by_file[uri(env, "events/done.json")]
    assert (done["files"][0]["status"], done["action"]) == ("LOADED", "delete")
    assert by_file["junk"]["action"] == "send" and by_file["junk"]["notes"][0].startswith("malformed")
    assert visible(env, env.prov.dlq_url) == 3  # peeking left every message visible
    text = run(env, "dlq", "show", code=1).stdout
    assert "not in the ledger" in text and "redrive sends it back" in text and "redrive deletes it" in text
    assert "3 message(s)" in run_json(env, "status", code=1)["attention"][-1]

    env.start_worker()  # the cause is fixed
    redriven = run_json(env, "dlq", "redrive")
    (report,) = redriven["dlqs"]
    assert (report["sent"], report["dropped"], report["deleted"], report["delete_failed"]) == (2, 1, 3, 0)
    assert env.queue_depth(env.prov.dlq_url) == 0
    poll(lambda: by_key(env).get("events/poison.json", {}).get("status") == "LOADED", 60, "poison.json LOADED")
    poll(lambda: env.sql("SELECT count(*) AS n FROM rejected_messages")[0]["n"] == 1, 30, "the junk recorded")
    assert rows_by_source(env) == {uri(env, "events/done.json"): 1, uri(env, "events/poison.json"): 2}
    row = by_key(env)["events/poison.json"]
    assert (row["rows_loaded"], row["attempts"], row["events_seen"]) == (2, 1, 1)
    assert run_json(env, "dlq", "show")["dlqs"][0]["messages"] == []
    assert "the dead-letter queue is empty" in run(env, "dlq", "redrive").stdout
    assert env.stop_workers() == [0]


# --------------------------------------------------------------------------- preview


def ledger_state(env: Env) -> dict[str, Any]:
    return {
        table: env.sql(f"SELECT * FROM {table} ORDER BY 1")
        for table in ("files", "batches", "schema_versions", "schema_proposals", "table_hints")
    }


def test_preview_shows_schema_sample_diff_and_decision_and_writes_nothing(env: Env) -> None:
    env.migrate()
    env.start_worker()
    env.put("events/a.json", jsonl({"id": 1, "price": 1.5}))
    env.wait_files(1, {"LOADED"})
    assert env.stop_workers() == [0]
    env.put("staging/new.json", jsonl({"id": 2, "price": 2.5, "color": "red"}, {"id": 3, "price": 3}))
    env.put("staging/conflict.json", jsonl({"id": 4, "price": {"amount": 4}}))
    env.put("staging/broken.json", b'{"id": 5, "price": \n')
    before = ledger_state(env)
    table = env.table("events")
    snapshot, snapshots = table.current_snapshot().snapshot_id, len(table.metadata.snapshots)

    evolve = run_json(env, "preview", uri(env, "staging/new.json"), "--ingestion", "events")
    assert [c["name"] for c in evolve["file_schema"]] == ["id", "price", "color"]
    assert evolve["sample"] == [{"id": 2, "price": 2.5, "color": "red"}, {"id": 3, "price": 3.0, "color": None}]
    assert [(c["name"], c["type"]) for c in evolve["table_schema"]] == [("id", "bigint"), ("price", "double")]
    assert [c["kind"] for c in evolve["diff"]] == ["column_added"]
    assert evolve["decision"]["action"] == "load"
    assert evolve["decision"]["text"].startswith("LOAD: the table evolves in the same commit: column added at color")
    assert evolve["written"] is False and evolve["ledger"] == []
    text = run(env, "preview", uri(env, "staging/new.json"), "--ingestion", "events", "--rows", "1").stdout
    assert "file schema:" in text and "sample (1 row(s)):" in text and '{"id":2,"price":2.5,"color":"red"}' in text
    assert "nothing was written" in text

    conflict = run_json(env, "preview", uri(env, "staging/conflict.json"), "--ingestion", "events", code=1)
    assert conflict["decision"]["action"] == "quarantine"
    assert conflict["decision"]["error_class"] == "SchemaConflict"
    assert "type conflict at price" in conflict["attention"][0]
    broken = run_json(env, "preview", uri(env, "staging/broken.json"), "--ingestion", "events", code=1)
    assert (broken["decision"]["action"], broken["decision"]["error_class"]) == ("fail", "ParseError")
    fresh = run_json(env, "preview", uri(env, "staging/new.json"), "--ingestion", "strict")
    assert fresh["table_schema"] is None and fresh["decision"]["text"].startswith("LOAD: creates")
    loaded = run_json(env, "preview", uri(env, "events/a.json"))  # the matching route by default
    assert loaded["ingestion"] == "events" and loaded["ledger"][0]["status"] == "LOADED" and loaded["diff"] == []
    assert "no route matches" in run(env, "preview", uri(env, "staging/new.json"), code=2).stderr
    assert "no such object" in run_json(env, "preview", uri(env, "events/none.json"), code=1)["attention"][0]

    assert ledger_state(env) == before  # no ledger row written or changed
    table = env.table("events")
    assert (table.current_snapshot().snapshot_id, len(table.metadata.snapshots)) == (snapshot, snapshots)
    assert [f.name for f in table.schema().fields] == ["id", "price", "_source_file", "_batch_id", "_ingested_at"]
    with pytest.raises(Exception, match=r"(?i)no ?such ?table|not found|does not exist"):
        env.table("strict")  # previewing into a new table did not create it
    assert env.queue_depth() == 0


# --------------------------------------------------------------------------- Spark Connect errors


class _Refuse(grpc.GenericRpcHandler):
    """A Spark Connect endpoint that answers every call with one gRPC status."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def service(self, details: Any) -> Any:
        def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(self.code, "refused by the test server")
            return b""

        if details.method.endswith(("ExecutePlan", "ReattachExecute")):

            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                yield fail(request, context)

            return grpc.unary_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(fail)


def test_spark_connect_failures_are_reported_in_one_friendly_line(env: Env) -> None:
    env.migrate()
    env.put("events/a.json", jsonl({"id": 1}))
    target = uri(env, "events/a.json")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
        down = run(env, "preview", target, code=1, ICEFEED_SPARK_URL=f"sc://127.0.0.1:{closed}")
    assert down.stderr.startswith("icefeed preview: Spark Connect cluster unreachable")
    assert len(down.stderr.strip().splitlines()) == 1

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[_Refuse(grpc.StatusCode.UNAUTHENTICATED)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        denied = run_json(env, "preview", target, code=1, ICEFEED_SPARK_URL=f"sc://127.0.0.1:{port}")
    finally:
        server.stop(0)
    assert denied["error_class"] == "SparkUnauthenticated"
    assert denied["error"] == "Spark Connect token rejected or expired: renew the token in ICEFEED_SPARK_URL"
