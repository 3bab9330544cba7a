"""`icefeed demo` end to end, as a newcomer runs it: its own stack, one worker, the sample files."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from worker.demo import sample_objects

pytestmark = pytest.mark.integration


def test_demo_loads_every_sample_file(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "demo", "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the demo cleans up on SIGTERM; SIGKILL would leak its stack
        out, _ = proc.communicate(timeout=90)
        pytest.fail(f"icefeed demo did not finish within 240 s:\n{out}")

    assert proc.returncode == 0, out
    for key, _ in sample_objects():
        assert re.search(rf"^\s+{re.escape(key)}\s+\w+\s+LOADED\s", out, re.MULTILINE), f"{key} not LOADED:\n{out}"
    assert "Worker stopped with SIGTERM: exit status 0" in out
    assert "\nOK: " in out
