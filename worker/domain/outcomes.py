"""What becomes of a message and of a file. Only the runner turns these into SQS calls.

:func:`retry` and :func:`outcome_for` decide, from a file's ledger state and the message's
receive count, whether a message is acked or comes back (and when); they take the settings
values they need as a :class:`RetryPolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from uuid import UUID

from worker.domain.errors import IcefeedError, is_outage


class FileStatus(StrEnum):
    """A file's status in the ledger (``files.status``). A member equals its string, so SQL rows
    and adapters may keep plain strings."""

    PENDING = "PENDING"
    CLAIMED = "CLAIMED"
    LOADED = "LOADED"
    FAILED = "FAILED"
    GONE = "GONE"
    SKIPPED = "SKIPPED"
    QUARANTINED = "QUARANTINED"
    REJECTED = "REJECTED"
    REPLACED = "REPLACED"  # on_overwrite = replace: a newer version of the object replaced its rows


PENDING: Final = FileStatus.PENDING
CLAIMED: Final = FileStatus.CLAIMED
LOADED: Final = FileStatus.LOADED
FAILED: Final = FileStatus.FAILED
GONE: Final = FileStatus.GONE
SKIPPED: Final = FileStatus.SKIPPED
QUARANTINED: Final = FileStatus.QUARANTINED
REJECTED: Final = FileStatus.REJECTED
REPLACED: Final = FileStatus.REPLACED

#: Statuses after which a message about the file can be acked.
TERMINAL: Final = frozenset({LOADED, FAILED, GONE, SKIPPED, QUARANTINED, REJECTED, REPLACED})
#: The longest delay SQS accepts (ChangeMessageVisibility / DelaySeconds ceiling used here).
SQS_MAX_DELAY_S: Final = 43200


@dataclass(frozen=True, slots=True)
class FileState:
    """One file's row in the ledger, as the pipeline and the runner see it."""

    file_id: int
    bucket: str
    key: str
    etag: str
    status: str
    batch_id: UUID | None
    error_message: str | None
    lease_left_s: float | None = None  # CLAIMED: seconds until its batch's lease runs out
    # PENDING, but another version of its key is CLAIMED (it is claimed once that batch is
    # settled); ``lease_left_s`` is then that batch's
    blocked: bool = False
    error_class: str | None = None
    attempts: int = 0  # claims of this file so far


@dataclass(frozen=True, slots=True)
class Ack:
    """Delete the message: its work is done or it can never be done (and is recorded)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Make the message visible again after ``delay_s`` seconds. ``in_flight``: its file is held
    by a batch that is not settled yet, so the message must not be spent (dead-lettered) on it:
    whether the file loads is that batch's business, and if the batch is released the file needs
    this message again."""

    delay_s: int
    reason: str
    in_flight: bool = False


Outcome = Ack | Retry


@dataclass(frozen=True, slots=True)
class FileResult:
    """How one file of a batch ended (status is a ledger status)."""

    file_id: int
    status: str
    rows: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    rows_rejected: int | None = None  # bad records left out (a quarantining route's), None: not counted
    bad_records: str | None = None  # the s3:// object holding them


def backoff_delay(receive_count: int, base_s: int, max_s: int) -> int:
    """Exponential backoff on the SQS receive count: base, 2·base, 4·base … capped."""
    exponent = max(0, min(receive_count - 1, 30))
    return int(min(max_s, base_s * (2**exponent)))


def combine(outcomes: list[Outcome]) -> Outcome:
    """A message holding several files is acked only when every file is done."""
    retries = [o for o in outcomes if isinstance(o, Retry)]
    if retries:
        slowest = max(retries, key=lambda r: r.delay_s)
        return Retry(slowest.delay_s, "; ".join(sorted({r.reason for r in retries})), any(r.in_flight for r in retries))
    return Ack("; ".join(sorted({o.reason for o in outcomes})) or "no files")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The settings values retries are computed from (``ICEFEED_SQS_BACKOFF_*``,
    ``ICEFEED_SQS_OUTAGE_MAX_ATTEMPTS``, and the lease's orphan grace and sweep interval)."""

    backoff_base_s: int
    backoff_max_s: int
    outage_max_attempts: int
    orphan_grace_s: float
    sweep_interval_s: float


def retry(policy: RetryPolicy, receive_count: int, reason: str, error: BaseException | None = None) -> Retry:
    """Back off on the receive count. When ``error`` is an outage (docs/guarantees.md), the
    retry is a wait that must not spend the message (``in_flight``)."""
    outage = isinstance(error, IcefeedError) and is_outage(error.error_class)
    delay = backoff_delay(receive_count, policy.backoff_base_s, policy.backoff_max_s)
    return Retry(delay, reason, in_flight=outage)


def outcome_for(policy: RetryPolicy, receive_count: int, state: FileState) -> Outcome:
    """What a message about a file in ``state`` becomes."""
    if state.status in TERMINAL:
        return Ack(state.status.lower())
    if state.status == PENDING and is_outage(state.error_class) and state.attempts <= policy.outage_max_attempts:
        # Its batch failed because a service was down or busy (the engine unreachable,
        # PostgreSQL gone, the table held by a batch settling): a wait for the service,
        # not a failure of the file, so the message is never spent on it. The backoff
        # grows with the file's claims, which renewing the message does not reset.
        delay = backoff_delay(max(receive_count, state.attempts), policy.backoff_base_s, policy.backoff_max_s)
        what = "table busy" if state.error_class == "TableBusy" else "waiting out an outage"
        return Retry(delay, f"{what}: {state.error_message or state.error_class}", in_flight=True)
    if state.status == CLAIMED or state.blocked:
        # Come back when that batch is done or, if its worker died, once a sweeper can have
        # settled it (lease + orphan grace + one sweep): retries must not run out meanwhile.
        settle_s = (state.lease_left_s or 0.0) + policy.orphan_grace_s + policy.sweep_interval_s
        what = "another version of the object is" if state.blocked else "file is"
        backoff = retry(policy, receive_count, f"{what} being loaded by a batch in flight")
        return Retry(max(backoff.delay_s, min(int(settle_s) + 1, SQS_MAX_DELAY_S)), backoff.reason, in_flight=True)
    return retry(policy, receive_count, f"file pending retry: {state.error_message or 'not loaded yet'}")
