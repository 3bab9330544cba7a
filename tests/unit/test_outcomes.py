"""Unit tests for worker.domain.outcomes: backoff and combining per-file outcomes per message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.errors import DataError, TransientError
from worker.domain.outcomes import (
    CLAIMED,
    FAILED,
    GONE,
    LOADED,
    PENDING,
    QUARANTINED,
    REJECTED,
    REPLACED,
    SKIPPED,
    TERMINAL,
    Ack,
    FileState,
    Outcome,
    Retry,
    RetryPolicy,
    backoff_delay,
    combine,
    outcome_for,
    retry,
)

PROPERTY = settings(max_examples=300, deadline=None, database=None)


# --------------------------------------------------------------------------- backoff_delay


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 320), (7, 640), (8, 900), (50, 900), (10**6, 900)],
)
def test_backoff_delay_doubles_and_caps(count: int, expected: int) -> None:
    assert backoff_delay(count, base_s=10, max_s=900) == expected


def test_backoff_delay_base_zero_is_always_zero() -> None:
    assert [backoff_delay(n, 0, 900) for n in range(0, 40)] == [0] * 40


def test_backoff_delay_cap_below_base() -> None:
    assert backoff_delay(1, base_s=100, max_s=30) == 30


def test_backoff_delay_huge_count_does_not_overflow() -> None:
    assert backoff_delay(10**9, base_s=43200, max_s=43200) == 43200
    assert isinstance(backoff_delay(10**9, 43200, 43200), int)


@PROPERTY
@given(
    count=st.integers(min_value=-5, max_value=200),
    base=st.integers(min_value=0, max_value=43200),
    cap=st.integers(min_value=0, max_value=43200),
)
def test_backoff_delay_monotone_and_capped(count: int, base: int, cap: int) -> None:
    here = backoff_delay(count, base, cap)
    nxt = backoff_delay(count + 1, base, cap)
    assert isinstance(here, int)
    assert 0 <= here <= cap
    assert here <= nxt
    assert here >= min(base, cap)


# --------------------------------------------------------------------------- combine


def test_combine_all_ack() -> None:
    out = combine([Ack("loaded"), Ack("gone"), Ack("loaded")])
    assert out == Ack("gone; loaded")


def test_combine_empty_is_ack() -> None:
    assert combine([]) == Ack("no files")


def test_combine_any_retry_wins_with_the_longest_delay() -> None:
    out = combine([Ack("loaded"), Retry(30, "pending"), Retry(120, "claimed"), Retry(5, "pending")])
    assert isinstance(out, Retry)
    assert out.delay_s == 120
    assert out.reason == "claimed; pending"


def test_combine_single_retry() -> None:
    assert combine([Retry(0, "x")]) == Retry(0, "x")


@PROPERTY
@given(
    st.lists(
        st.one_of(
            st.builds(Ack, st.sampled_from(["loaded", "gone", "failed"])),
            st.builds(Retry, st.integers(min_value=0, max_value=43200), st.sampled_from(["pending", "claimed"])),
        ),
        max_size=10,
    )
)
def test_combine_property(outcomes: list[Outcome]) -> None:
    out = combine(outcomes)
    retries = [o for o in outcomes if isinstance(o, Retry)]
    if retries:
        assert isinstance(out, Retry)
        assert out.delay_s == max(r.delay_s for r in retries)
        assert set(out.reason.split("; ")) == {r.reason for r in retries}
    else:
        assert isinstance(out, Ack)
    # order does not matter
    assert combine(list(reversed(outcomes))) == out


def test_terminal_statuses() -> None:
    assert {LOADED, FAILED, GONE, SKIPPED, QUARANTINED, REJECTED, REPLACED} == TERMINAL
    assert PENDING not in TERMINAL
    assert CLAIMED not in TERMINAL


# --------------------------------------------------------------------------- outcome_for

POLICY = RetryPolicy(backoff_base_s=10, backoff_max_s=900, outage_max_attempts=3, orphan_grace_s=5, sweep_interval_s=2)


def state(status: str, **kw: object) -> FileState:
    return FileState(1, "b", "k", "e", status, None, kw.pop("error_message", None), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_a_file_in_a_final_state_acks_its_message(status: str) -> None:
    assert outcome_for(POLICY, 7, state(status)) == Ack(status.lower())


def test_a_file_waiting_out_an_outage_does_not_spend_its_message() -> None:
    waiting = outcome_for(POLICY, 1, state(PENDING, error_class="SparkUnavailable", attempts=3))
    assert isinstance(waiting, Retry) and waiting.in_flight
    assert waiting.delay_s == 40  # the backoff grows with the file's claims, not the renewed message's receives
    assert waiting.reason.startswith("waiting out an outage")
    busy = outcome_for(POLICY, 1, state(PENDING, error_class="TableBusy", attempts=1, error_message="held"))
    assert busy == Retry(10, "table busy: held", in_flight=True)


def test_past_its_outage_attempts_a_file_spends_its_message_like_any_retry() -> None:
    spent = outcome_for(POLICY, 2, state(PENDING, error_class="SparkUnavailable", attempts=4, error_message="x"))
    assert spent == Retry(20, "file pending retry: x", in_flight=False)
    plain = outcome_for(POLICY, 2, state(PENDING, error_class="ParseError", attempts=1))
    assert plain == Retry(20, "file pending retry: not loaded yet", in_flight=False)


def test_a_file_in_a_batch_in_flight_comes_back_once_a_sweeper_could_settle_it() -> None:
    claimed = outcome_for(POLICY, 1, state(CLAIMED, lease_left_s=30.5))
    assert claimed == Retry(38, "file is being loaded by a batch in flight", in_flight=True)  # 30.5 + 5 + 2, up
    blocked = outcome_for(POLICY, 4, state(PENDING, blocked=True, lease_left_s=1.0))
    assert blocked.delay_s == 80 and blocked.in_flight  # the backoff, when longer than the settling
    assert blocked.reason == "another version of the object is being loaded by a batch in flight"


def test_a_message_waits_without_spending_itself_when_any_of_its_files_does() -> None:
    waiting, plain = Retry(5, "a", in_flight=True), Retry(9, "b", in_flight=False)
    assert combine([plain, waiting, Ack("c")]) == Retry(9, "a; b", in_flight=True)
    assert combine([plain, Ack("c")]) == Retry(9, "b", in_flight=False)


def test_a_claimed_file_without_a_known_lease_waits_grace_and_sweep() -> None:
    claimed = outcome_for(POLICY, 1, state(CLAIMED, lease_left_s=None))
    assert claimed.delay_s == 10 and claimed.in_flight  # 0 + 5 + 2 s, under the 10 s backoff
    slow = RetryPolicy(backoff_base_s=1, backoff_max_s=900, outage_max_attempts=3, orphan_grace_s=5, sweep_interval_s=2)
    assert outcome_for(slow, 1, state(CLAIMED, lease_left_s=None)).delay_s == 8  # int(7) + 1


def test_an_outage_wait_names_the_error_class_when_there_is_no_message() -> None:
    waiting = outcome_for(POLICY, 1, state(PENDING, error_class="PgUnavailable", attempts=1))
    assert waiting.reason == "waiting out an outage: PgUnavailable"


def test_retry_waits_without_spending_the_message_only_for_an_outage() -> None:
    assert retry(POLICY, 1, "r", TransientError("down", error_class="PgUnavailable")).in_flight
    assert not retry(POLICY, 1, "r", DataError("bad")).in_flight
    assert not retry(POLICY, 1, "r", RuntimeError("?")).in_flight
