"""What becomes of a message and of a file. Only the runner turns these into SQS calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# File statuses in the ledger.
PENDING: Final = "PENDING"
CLAIMED: Final = "CLAIMED"
LOADED: Final = "LOADED"
FAILED: Final = "FAILED"
GONE: Final = "GONE"
SKIPPED: Final = "SKIPPED"
QUARANTINED: Final = "QUARANTINED"
REJECTED: Final = "REJECTED"
REPLACED: Final = "REPLACED"  # on_overwrite = replace: a newer version of the object replaced its rows

#: Statuses after which a message about the file can be acked.
TERMINAL: Final = frozenset({LOADED, FAILED, GONE, SKIPPED, QUARANTINED, REJECTED, REPLACED})


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
