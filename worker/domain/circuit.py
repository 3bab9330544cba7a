"""A circuit breaker per engine (pure: the caller gives the time).

``closed``: calls go through; ``failures_to_open`` outage failures in a row open it.
``open``: calls are refused at once (their files wait, as in any outage) until ``cooldown_s``
has passed; then ``half_open``: one call at a time goes through as a probe. A probe that succeeds
closes the circuit; one that fails opens it again for twice as long (up to ``max_cooldown_s``)."""

from __future__ import annotations

from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class Breaker:
    failures_to_open: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0
    state: str = CLOSED
    failures: int = 0
    opened_at: float | None = None
    failing_since: float | None = None
    last_error: str = ""
    _wait_s: float = field(default=0.0, repr=False)
    _probing: bool = field(default=False, repr=False)

    def allow(self, now: float) -> bool:
        """May a call go to the engine now? (In half-open, True for one probe at a time.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.opened_at is not None and now - self.opened_at >= self._wait_s:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self, now: float) -> float:
        """Seconds until a refused call could go through (0 when it could now)."""
        if self.state != OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self._wait_s - now)

    def succeeded(self) -> bool:
        """Record a call that reached the engine and worked; True when this closed the circuit."""
        reopened = self.state != CLOSED
        self.state, self.failures, self.opened_at, self.failing_since = CLOSED, 0, None, None
        self._probing, self._wait_s, self.last_error = False, 0.0, ""
        return reopened

    def failed(self, now: float, error: str) -> bool:
        """Record an outage failure of a call; True when this opened the circuit."""
        self.failures += 1
        self.last_error = error
        if self.failing_since is None:
            self.failing_since = now
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.failures_to_open):
            self._wait_s = self.cooldown_s if self.state == CLOSED else min(self.max_cooldown_s, 2 * self._wait_s)
            self.state, self.opened_at, self._probing = OPEN, now, False
            return True
        return False

    def released(self) -> None:
        """A probe call ended without telling anything about the engine (e.g. a data error)."""
        self._probing = False
