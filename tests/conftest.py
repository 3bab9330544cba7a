"""Shared fixtures. Integration tests run against one real local stack per session (moto server
with real bucket notifications, Sail, PostgreSQL); every test gets its own bucket, queue, Glue
database and ledger schema, so tests never see each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Env, make_env
from worker.localstack import Stack

collect_ignore = ["infra"]  # checked by infra/check.sh in its own environment


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack")).start(os.environ.get("ICEFEED_PG_DSN")) as s:
        yield s


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[Env]:
    e = make_env(stack, tmp_path, uuid.uuid4().hex[:10])
    try:
        yield e
    finally:
        e.close()
