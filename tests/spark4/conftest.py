"""The Apache Spark 4 tier: the same pipeline (moto + PostgreSQL from the session ``stack``) writing
through a real Spark 4.0 Connect server, Parquet tables. Run it alone with
``pytest tests/spark4``, or leave it out with ``-m "not spark4"``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.spark4.support import Spark4Env, Spark4Server, running_server, spark4_env
from worker.localstack import Stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "spark4: runs the pipeline through a real Apache Spark 4 Connect server (needs Java 17)"
    )


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


@pytest.fixture(scope="session")
def spark4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spark4Server]:
    if _java() is None:
        why = "no Java on this machine (JAVA_HOME or `java` on PATH): the Spark 4 tier needs a JVM (Java 17)"
        if os.environ.get("CI") == "true":  # in CI a tier that cannot run fails (the reading parity lives here)
            pytest.fail(why)
        pytest.skip(why)
    with running_server(tmp_path_factory.mktemp("spark4")) as server:
        yield server


@pytest.fixture
def s4env(stack: Stack, spark4: Spark4Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spark4Env]:
    # A tmp dir of our own: table locations allow only [A-Za-z0-9._-/=@] (no test-id brackets).
    with spark4_env(stack, spark4, tmp_path_factory.mktemp("s4env")) as e:
        yield e
