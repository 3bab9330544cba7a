"""PostgreSQL time limits as icefeed errors: every timeout is a TransientError with its own class.

The limits are set per connection by ``connect_pool`` (settings ``ICEFEED_PG_*_TIMEOUT_S``); this
module names what happened when one of them fires, so the ledger, the logs and the metrics say
*which* wait was too long. Nothing of the statement took effect in any of these cases (the server
rolls its transaction back), so the work can be tried again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg

from worker.domain.errors import TransientError

#: Exceptions ``timeout_error`` understands. ``TimeoutError`` is a subclass of ``OSError``:
#: catch these before any broader "connection lost" handler that retries OSError.
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    TimeoutError,
)

#: error_class of each limit (the ledger and the metrics labels use these names).
STATEMENT_TIMEOUT = "PgStatementTimeout"
LOCK_TIMEOUT = "PgLockTimeout"
IDLE_TIMEOUT = "PgIdleInTransactionTimeout"
COMMAND_TIMEOUT = "PgCommandTimeout"
ACQUIRE_TIMEOUT = "PgAcquireTimeout"
CANCELED = "PgCanceled"


def timeout_error(exc: BaseException, *, acquiring: bool = False) -> TransientError | None:
    """The TransientError for a PostgreSQL time limit, or None if ``exc`` is not one.

    ``acquiring``: the exception came from waiting for a pooled connection
    (``pool.acquire(timeout=ICEFEED_PG_ACQUIRE_TIMEOUT_S)``), where a bare TimeoutError means
    the pool had no free connection, not that a statement was slow."""
    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        return TransientError(
            f"PostgreSQL: gave up waiting for a lock (ICEFEED_PG_LOCK_TIMEOUT_S): {exc}", error_class=LOCK_TIMEOUT
        )
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        if "statement timeout" in str(exc):
            return TransientError(
                f"PostgreSQL: statement ran past ICEFEED_PG_STATEMENT_TIMEOUT_S: {exc}", error_class=STATEMENT_TIMEOUT
            )
        return TransientError(f"PostgreSQL: statement canceled: {exc}", error_class=CANCELED)
    if isinstance(exc, asyncpg.exceptions.IdleInTransactionSessionTimeoutError):
        return TransientError(
            f"PostgreSQL: transaction left idle past ICEFEED_PG_IDLE_IN_TRANSACTION_TIMEOUT_S: {exc}",
            error_class=IDLE_TIMEOUT,
        )
    if isinstance(exc, TimeoutError):
        if acquiring:
            return TransientError(
                "PostgreSQL: no pooled connection free within ICEFEED_PG_ACQUIRE_TIMEOUT_S"
                " (every connection busy; see ICEFEED_PG_POOL_MAX)",
                error_class=ACQUIRE_TIMEOUT,
            )
        return TransientError(
            "PostgreSQL: no answer within ICEFEED_PG_COMMAND_TIMEOUT_S (server or network stalled)",
            error_class=COMMAND_TIMEOUT,
        )
    return None


@contextmanager
def timeouts_as_transient() -> Iterator[None]:
    """Inside: a PostgreSQL time limit that fires is raised as its TransientError."""
    try:
        yield
    except TIMEOUT_ERRORS as exc:
        error = timeout_error(exc)
        assert error is not None
        raise error from None


@asynccontextmanager
async def acquired(pool: asyncpg.Pool, timeout_s: float) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
    """A pooled connection, waited for at most ``timeout_s`` (then TransientError
    ``PgAcquireTimeout``); released on exit."""
    try:
        conn = await pool.acquire(timeout=timeout_s)
    except TimeoutError as exc:
        error = timeout_error(exc, acquiring=True)
        assert error is not None
        raise error from None
    try:
        yield conn
    finally:
        await pool.release(conn)
