"""Object keys that no engine reads as written. Pure.

An S3 key is an opaque string: ``a/sub/../b.csv``, ``a/./b.csv`` and ``a//b.csv`` are objects of
their own. Engines read objects by path, and paths are normalised on the way:

- Sail (measured on the local stack): ``csv/x/sub/../target.csv`` read the rows of
  ``csv/x/target.csv``; ``csv/x/./single.csv`` read nothing (0 rows, no error);
  ``csv/x//double.csv`` failed with "invalid path … contained empty path segment". Percent-encoding
  cannot help: URL parsing treats ``%2E%2E`` as ``..``, and ``%2F`` is another key.
- Apache Spark (Hadoop ``Path``): the path is normalised as a URI (``.`` and ``..`` resolved) and
  ``//`` collapsed to ``/``, so such a key reads another object or none.

The worker's own S3 client sends the key as written (measured: a small JSON file under
``events/keys/sub/../plain.json`` or ``events/keys//double.json`` loaded its own rows). So a file
the worker reads itself loads whatever its key; a file the engine would read under such a key is
refused at admission, before any read: FAILED with the permanent error class ``UnsafeKey``, its
message acked, never retried.
"""

from __future__ import annotations

from typing import Final

UNSAFE_KEY: Final = "UnsafeKey"
_DOT_SEGMENTS: Final = frozenset((".", ".."))


def unsafe_key(key: str) -> str | None:
    """Why the engines would not read ``key`` (the decoded S3 key) as written, or None."""
    segments = key.split("/")
    dots = sorted({s for s in segments if s in _DOT_SEGMENTS})
    if dots:
        names = " and ".join(f"'{s}'" for s in dots)
        return (
            f"the key has a {names} path segment: engines resolve such segments (Sail read another object "
            "or nothing), so the engine cannot read it as written; copy the object to a key without them"
        )
    if "" in segments:
        where = "a leading '/'" if key.startswith("/") else "a trailing '/'" if key.endswith("/") else "'//'"
        return (
            f"the key has an empty path segment ({where}): engines reject it (Sail: 'contained empty path "
            "segment') or collapse it (Hadoop reads another object); copy the object to a key without it"
        )
    return None
