"""Which ingestion a file belongs to: bucket + key prefix + key suffix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    bucket: str
    prefix: str
    suffix: str

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix) and key.endswith(self.suffix)

    def overlaps(self, other: RouteRule) -> bool:
        """S3 rejects two notification filters on one bucket that could match the same key."""
        if self.bucket != other.bucket:
            return False
        prefixes = self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)
        suffixes = self.suffix.endswith(other.suffix) or other.suffix.endswith(self.suffix)
        return prefixes and suffixes


def match_route(rules: Iterable[RouteRule], bucket: str, key: str) -> RouteRule | None:
    for rule in rules:
        if rule.matches(bucket, key):
            return rule
    return None


def overlapping_pairs(rules: Sequence[RouteRule]) -> list[tuple[RouteRule, RouteRule]]:
    return [(a, b) for i, a in enumerate(rules) for b in rules[i + 1 :] if a.overlaps(b)]
