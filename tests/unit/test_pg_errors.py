"""PostgreSQL time limits as errors: each limit that fires is a TransientError with its own class
naming the setting to look at."""

from __future__ import annotations

import asyncpg
import pytest

from worker.adapters.pg_errors import TIMEOUT_ERRORS, timeout_error, timeouts_as_transient
from worker.domain.errors import TransientError


def _pg(cls: type[asyncpg.PostgresError], message: str) -> asyncpg.PostgresError:
    return cls(message)


@pytest.mark.parametrize(
    ("exc", "error_class", "names"),
    [
        (
            _pg(asyncpg.exceptions.QueryCanceledError, "canceling statement due to statement timeout"),
            "PgStatementTimeout",
            "ICEFEED_PG_STATEMENT_TIMEOUT_S",
        ),
        (
            _pg(asyncpg.exceptions.LockNotAvailableError, "canceling statement due to lock timeout"),
            "PgLockTimeout",
            "ICEFEED_PG_LOCK_TIMEOUT_S",
        ),
        (
            _pg(
                asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
                "terminating connection due to idle-in-transaction timeout",
            ),
            "PgIdleInTransactionTimeout",
            "ICEFEED_PG_IDLE_IN_TRANSACTION_TIMEOUT_S",
        ),
        (_pg(asyncpg.exceptions.QueryCanceledError, "canceling statement due to user request"), "PgCanceled", ""),
        (TimeoutError(), "PgCommandTimeout", "ICEFEED_PG_COMMAND_TIMEOUT_S"),
    ],
)
def test_each_limit_is_a_transient_error_with_its_own_class(exc: BaseException, error_class: str, names: str) -> None:
    error = timeout_error(exc)
    assert isinstance(error, TransientError)
    assert error.error_class == error_class
    assert names in str(error)
    assert isinstance(exc, TIMEOUT_ERRORS)


def test_an_acquire_timeout_names_the_pool() -> None:
    error = timeout_error(TimeoutError(), acquiring=True)
    assert error is not None and error.error_class == "PgAcquireTimeout"
    assert "ICEFEED_PG_ACQUIRE_TIMEOUT_S" in str(error) and "ICEFEED_PG_POOL_MAX" in str(error)


def test_other_errors_are_not_timeouts() -> None:
    assert timeout_error(asyncpg.exceptions.UniqueViolationError("duplicate key")) is None
    assert timeout_error(ConnectionResetError()) is None
    with pytest.raises(asyncpg.exceptions.UniqueViolationError), timeouts_as_transient():
        raise asyncpg.exceptions.UniqueViolationError("duplicate key")


def test_timeouts_as_transient_converts() -> None:
    with pytest.raises(TransientError) as info, timeouts_as_transient():
        raise asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout")
    assert info.value.error_class == "PgLockTimeout"
