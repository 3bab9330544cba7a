"""SparkSink pieces the readiness probe relies on: the ping does not queue behind batch jobs, and
a client that gave up retrying reports what it last saw (an unreachable server), so the session
is dropped and re-created."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from pyspark.errors import RetriesExceeded

from worker.adapters.spark_sink import SparkSink, to_icefeed_error
from worker.domain.errors import TransientError
from worker.settings import SparkSettings


class Unavailable(Exception):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


def test_retries_exceeded_is_classified_by_its_cause() -> None:
    try:
        try:
            raise Unavailable("failed to connect to all addresses")
        except Unavailable as cause:
            raise RetriesExceeded(errorClass="RETRIES_EXCEEDED", messageParameters={}) from cause
    except RetriesExceeded as exc:
        error = to_icefeed_error(exc)
    assert isinstance(error, TransientError)
    assert error.error_class == "SparkUnavailable"


def test_retries_exceeded_without_a_cause_means_the_server_kept_failing() -> None:
    # The client retries only what it deems transient (UNAVAILABLE and the like): giving up on
    # that is an outage, never the file's fault, so the batch is retried, not bisected.
    error = to_icefeed_error(RetriesExceeded(errorClass="RETRIES_EXCEEDED", messageParameters={}))
    assert error.error_class == "SparkUnavailable"


async def test_the_ping_does_not_wait_for_busy_batch_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = SparkSink(SparkSettings(concurrency=1))
    monkeypatch.setattr(sink, "_ping", lambda: "4.0.1")
    async with sink._limit:  # every job slot is taken by a long batch
        assert await asyncio.wait_for(sink.ping(), 5) == "4.0.1"


async def test_a_failed_ping_drops_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = SparkSink(SparkSettings())
    forgotten: list[bool] = []

    def refused() -> str:
        raise Unavailable("connection refused")

    monkeypatch.setattr(sink, "_ping", refused)
    monkeypatch.setattr(sink, "_forget_session", lambda: forgotten.append(True))
    with pytest.raises(TransientError, match="unavailable"):
        await sink.ping()
    assert forgotten == [True]
