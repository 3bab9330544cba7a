"""The image tier: builds the Dockerfile (infra/image/build.sh, buildah without a daemon) once per
session and runs it with runc the way the Deployment runs it. Needs root, buildah, debootstrap and
runc (`apt-get install buildah debootstrap runc`); without them the tier is skipped, and with
CI=true it fails instead. Run it alone with ``make image-test``; leave it out with ``-m "not image"``."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.image.support import BUILDAH_ENV, FIGURES, ROOT, Image, tool

#: The image built for the tests; a user's `make image` builds icefeed:dev.
TAG = "localhost/icefeed:test"
TOOLS = ("buildah", "debootstrap", "runc")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds the container image and runs it (tests/image)")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the image tier needs root (buildah with root storage, debootstrap, runc)"
    absent = [name for name in TOOLS if tool(name) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install buildah debootstrap runc)"
    return None


@pytest.fixture(scope="session")
def image() -> Iterator[Image]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the image tier cannot run: {reason}")
        pytest.skip(reason)
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "infra" / "image" / "build.sh"), TAG],
        env={**os.environ, **BUILDAH_ENV, "ICEFEED_IMAGE_BUILDER": "buildah"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        pytest.fail(
            f"the image did not build (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )
    built = Image.inspect(TAG, time.monotonic() - started)
    steps = [line for line in result.stdout.splitlines() if line.startswith("image: ")]
    FIGURES["build"] = f"{built.build_s:.0f} s ({'; '.join(s.removeprefix('image: ') for s in steps)})"
    FIGURES["size"] = f"{built.size / 1e6:.0f} MB ({' + '.join(f'{n / 1e6:.1f}' for n in built.layers)} MB by layer)"
    yield built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("container image")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name:<10} {value}")
