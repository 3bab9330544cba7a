"""Shared by the memory tests of the Sail and Apache Spark 4 tiers."""

from __future__ import annotations

import json
from collections import Counter

from tests.harness import Env

MiB = 1024 * 1024
FILES = 24
ROWS_PER_FILE = 1500


def big_batch(env: Env) -> Counter[str]:
    """Upload 24 JSON-lines files of ~6 MB (each under the worker-read limit): ~145 MiB of Arrow
    once decoded, over the 128 MiB gRPC message limit. Three shapes (three Arrow relations of
    ~48 MiB, each under pyspark's 64 MiB artifact-cache threshold on Apache Spark): together they
    are over the limit on every engine. Returns the rows expected per source."""
    text = "x" * 4000
    expected: Counter[str] = Counter()
    for i in range(FILES):
        key = f"events/big/{i:02}.json"
        rows = (
            json.dumps({"id": i * ROWS_PER_FILE + j, "text": text, f"shape{i % 3}": j}).encode()
            for j in range(ROWS_PER_FILE)
        )
        body = b"\n".join(rows) + b"\n"
        assert len(body) < 8 * MiB
        env.put(key, body)
        expected[f"s3://{env.bucket}/{key}"] = ROWS_PER_FILE
    assert FILES * ROWS_PER_FILE * (len(text) + 8) > 128 * MiB
    return expected
