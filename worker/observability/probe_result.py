"""The answer of one readiness probe (``worker.probes``), as ``/readyz`` (``health.py``) and
``icefeed check`` report it. Pure data: shared by both without either importing the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ProbeResult:
    name: str
    ok: bool
    detail: str
    hint: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "hint": "" if self.ok else self.hint,
            "seconds": round(self.seconds, 3),
        }
