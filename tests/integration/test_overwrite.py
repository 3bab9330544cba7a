"""Same key, new content: the (bucket, key, etag) identity, on_overwrite = replace, stale events."""

from __future__ import annotations

import json

import pytest

from tests.harness import Env, poll, s3_event

pytestmark = pytest.mark.integration


def jsonl(*rows: dict) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def test_replace_swaps_a_keys_rows_for_its_new_version_once(env: Env) -> None:
    env.migrate()
    env.start_worker()
    env.put("snap/store.json", jsonl({"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}))
    env.put("snap/other.json", jsonl({"sku": "z", "qty": 9}))
    env.wait_files(2)
    v2 = jsonl({"sku": "a", "qty": 5}, {"sku": "b", "qty": 6}, {"sku": "c", "qty": 7})
    etag2 = env.put("snap/store.json", v2)
    files = env.wait_files(3, statuses={"LOADED", "REPLACED"})
    by_etag = {(f["key"], f["etag"]): f for f in files}
    assert by_etag[("snap/store.json", etag2)]["status"] == "LOADED"
    old = next(f for f in files if f["key"] == "snap/store.json" and f["etag"] != etag2)
    assert old["status"] == "REPLACED" and old["replaced_by"] == by_etag[("snap/store.json", etag2)]["id"]
    expected = [("a", 5), ("b", 6), ("c", 7), ("z", 9)]
    assert sorted((r["sku"], r["qty"]) for r in env.table_rows("snapshots")) == expected
    # The new version's event delivered again changes nothing.
    env.send_raw(s3_event(env.bucket, "snap/store.json", etag2, len(v2)))
    poll(lambda: env.queue_depth() == 0, 60, "the duplicate acked")
    assert sorted((r["sku"], r["qty"]) for r in env.table_rows("snapshots")) == expected
    assert env.stop_workers() == [0]


def test_append_keeps_every_version_of_a_key(env: Env) -> None:
    env.migrate()
    env.start_worker()
    env.put("events/k.json", jsonl({"id": 1}))
    env.wait_files(1)
    env.put("events/k.json", jsonl({"id": 2}))
    files = env.wait_files(2)
    assert [f["status"] for f in files] == ["LOADED", "LOADED"]
    assert len({f["etag"] for f in files}) == 2
    assert sorted(r["id"] for r in env.table_rows("events")) == [1, 2]
    assert env.stop_workers() == [0]


def test_a_stale_event_is_recorded_and_ignored(env: Env) -> None:
    env.migrate()
    env.put("events/s.json", jsonl({"id": 1}))
    env.start_worker()
    env.wait_files(1)
    # An event for a version that is no longer the object: its etag does not match HEAD.
    env.send_raw(s3_event(env.bucket, "events/s.json", "f" * 32, 10, sequencer="0000000000000002"))
    files = {f["etag"]: f for f in env.wait_files(2)}
    stale = files["f" * 32]
    assert (stale["status"], stale["error_class"], stale["sequencer"]) == ("SKIPPED", "Superseded", "0000000000000002")
    assert "overwritten" in stale["error_message"]
    poll(lambda: env.queue_depth() == 0, 60, "the stale event acked")
    assert sorted(r["id"] for r in env.table_rows("events")) == [1]
    assert env.stop_workers() == [0]
