"""``python -m load …`` as the load harness's smoke tests run it: a subprocess in the repository
root whose output is the log; past its time limit it gets SIGINT (the harness then finishes what
it is doing and stops its stack) and the test fails with the log's tail."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_load(args: list[str], timeout_s: float) -> tuple[int, str]:
    """The exit status and the log of ``python -m load *args``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "load", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            log, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
        pytest.fail(f"python -m load {' '.join(args)} did not finish within {timeout_s:.0f} s:\n{log[-4000:]}")
    return proc.returncode, log
