"""Unit tests for the pure rules the pipeline and ``icefeed preview`` share: who reads a file
(worker.domain.reading), the FileTooLarge rule, the quarantine class of a schema decision, and
what a message becomes for a file state (worker.domain.outcomes.retry / outcome_for)."""

from __future__ import annotations

import pytest

from worker.domain.errors import TransientError
from worker.domain.outcomes import (
    FileState,
    FileStatus,
    Retry,
    RetryPolicy,
    outcome_for,
    retry,
)
from worker.domain.policy import FileDecision
from worker.domain.reading import deletes_rows, parses_locally, too_large, worker_reads
from worker.domain.schema import Change, ChangeKind

POLICY = RetryPolicy(
    backoff_base_s=10, backoff_max_s=900, outage_max_attempts=3, orphan_grace_s=30, sweep_interval_s=15
)


def state(status: str, **kw: object) -> FileState:
    return FileState(1, "b", "k.json", "e", status, None, None, **kw)  # type: ignore[arg-type]


def test_only_sail_makes_the_worker_parse_whole_file_json() -> None:
    assert parses_locally("sail", True) and not parses_locally("sail", False) and not parses_locally("spark", True)
    assert worker_reads("sail", "json", True, None, 0)  # whatever its size: Sail cannot read it
    assert worker_reads("spark", "json", False, 100, 100) and not worker_reads("spark", "json", False, 101, 100)
    assert not worker_reads("spark", "json", False, None, 100)  # size unknown: the engine reads it
    assert not worker_reads("spark", "csv", False, 1, 100)
    assert deletes_rows("iceberg") and not deletes_rows("parquet")


def test_too_large_names_the_setting_that_refuses_the_file() -> None:
    assert too_large(10, False, 5, 10) is None
    assert "ICEFEED_BATCH_MAX_FILE_BYTES=10" in (too_large(11, False, 5, 10) or "")
    assert "ICEFEED_SPARK_LOCAL_PARSE_MAX_BYTES=5" in (too_large(6, True, 5, 10) or "")
    assert too_large(None, True, 5, 10) is None


def test_a_breaking_change_is_a_conflict_a_held_back_one_a_change() -> None:
    conflict = Change(ChangeKind.TYPE_CONFLICT, "a", "bigint", "string")
    added = Change(ChangeKind.COLUMN_ADDED, "b", None, "bigint")
    assert FileDecision(1, False, (conflict, added)).error_class == "SchemaConflict"
    assert FileDecision(1, False, (added,)).error_class == "SchemaChange"


def test_statuses_are_a_str_enum_equal_to_the_ledger_strings() -> None:
    assert FileStatus.PENDING == "PENDING" and f"{FileStatus.LOADED}" == "LOADED"
    assert FileStatus("QUARANTINED") is FileStatus.QUARANTINED


def test_retry_waits_out_an_outage_without_spending_the_message() -> None:
    outage = retry(POLICY, 2, "down", TransientError("x", error_class="SparkUnavailable"))
    assert outage == Retry(20, "down", in_flight=True)
    assert retry(POLICY, 2, "bad") == Retry(20, "bad", in_flight=False)


@pytest.mark.parametrize("status", ["LOADED", "FAILED", "GONE", "SKIPPED", "QUARANTINED", "REJECTED", "REPLACED"])
def test_a_final_file_acks_its_message(status: str) -> None:
    assert outcome_for(POLICY, 1, state(status)).reason == status.lower()  # type: ignore[union-attr]


def test_a_claimed_file_waits_until_a_sweeper_can_have_settled_its_batch() -> None:
    outcome = outcome_for(POLICY, 1, state("CLAIMED", lease_left_s=60.0))
    assert isinstance(outcome, Retry) and outcome.in_flight and outcome.delay_s == 60 + 30 + 15 + 1


def test_the_size_limits_are_inclusive() -> None:
    assert too_large(100, True, 100, 1000) is None  # exactly the local parse limit: parsed
    assert too_large(101, True, 100, 1000) == (
        "whole-file JSON of 101 bytes: this engine reads JSON lines only, and the worker parses "
        "such files itself up to ICEFEED_SPARK_LOCAL_PARSE_MAX_BYTES=100"
    )
    assert too_large(1000, False, 100, 1000) is None  # exactly the file limit: loaded
    assert too_large(1001, False, 100, 1000) == "1001 bytes is over ICEFEED_BATCH_MAX_FILE_BYTES=1000"
    assert too_large(None, True, 100, 1000) is None  # size unknown: nothing to refuse yet
