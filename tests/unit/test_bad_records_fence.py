"""A writer paused past its fence must not write bad records: the object is written inside the
fenced write, right before the append, only while the batch's writer still vouches for its lease
(the same check as the append's). Forced with a may_append that says no, as a worker frozen
until a sweeper took its files over would find."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from worker.domain.batching import FileWork
from worker.domain.errors import TransientError
from worker.domain.policy import BatchPlan, FileDecision, Policy
from worker.domain.reading import BadRecord
from worker.domain.schema import Struct
from worker.pipeline import Pipeline
from worker.ports import WriteRequest
from worker.routes import parse_routes
from worker.settings import load_settings

ROUTES = """
[[ingestion]]
name = "clicks"
bucket = "landing"
prefix = "clicks/"
format = "json"
table = "glue.web.clicks"
location = "s3://wh/web/clicks"
bad_records = "quarantine"
bad_records_location = "s3://bad/kept"
"""


class Store:
    def __init__(self) -> None:
        self.written: list[tuple[str, str, bytes]] = []

    async def write(self, bucket: str, key: str, body: bytes) -> None:
        self.written.append((bucket, key, body))


class Decoded:
    bad = (BadRecord(4, 123, "JSON parse error", '{"id": 4'),)


def _request(may_append: Any) -> tuple[WriteRequest, BatchPlan]:
    f = FileWork(7, "clicks", "landing", "clicks/a.json", "e1", 100)
    request = WriteRequest(
        uuid4(), "glue.web.clicks", "s3://wh/web/clicks", {}, [f], 1, decoded={7: Decoded()}, may_append=may_append
    )
    plan = BatchPlan(Policy("evolve"), None, Struct(()), {7: FileDecision(7, True)})
    return request, plan


async def test_a_paused_writer_writes_no_bad_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEFEED_SQS_QUEUE_URLS", "https://sqs.local/1/q")
    store = Store()
    p = Pipeline(load_settings(), parse_routes(ROUTES), None, store, None, None)  # type: ignore[arg-type]
    request, plan = _request(lambda: False)  # its lease was not vouched for in time
    with pytest.raises(TransientError) as caught:
        await p._keep_bad_records(request, plan)
    assert caught.value.error_class == "FenceExpired" and store.written == []
    request, plan = _request(lambda: True)  # still its own: one object, named by the file version
    kept = await p._keep_bad_records(request, plan)
    ((bucket, key, body),) = store.written
    assert (bucket, key) == ("bad", "kept/glue.web.clicks/file-7.jsonl")
    assert kept == {7: (1, "s3://bad/kept/glue.web.clicks/file-7.jsonl")}
    assert str(request.batch_id).encode() in body and b'"line": 4' in body
