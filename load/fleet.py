"""icefeed worker processes (``python -m worker run``) started and stopped by the harness."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from worker.localstack import Stack, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WorkerProc:
    label: str
    popen: subprocess.Popen[bytes]
    pid: int  # the worker's own pid (the child of py-spy when profiled)
    log_path: Path
    started_at: float
    log: IO[bytes] | None = None
    exit_code: int | None = None
    stopped: dict[str, Any] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)  # batch_committed lines (with timings)
    # maintenance_step lines, each with after_commit: the batch_committed lines logged before it
    maintenance: list[dict[str, Any]] = field(default_factory=list)


class Fleet:
    def __init__(
        self,
        stack: Stack,
        queue_url: str,
        routes_file: Path,
        schema: str,
        workdir: Path,
        extra_env: dict[str, str],
    ) -> None:
        self.stack = stack
        self.queue_url = queue_url
        self.routes_file = routes_file
        self.schema = schema
        self.workdir = workdir
        self.extra_env = extra_env
        self.procs: list[WorkerProc] = []

    def env(self, worker_id: str = "load-cli") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICEFEED_")}
        env.update(self.stack.worker_env(self.queue_url, self.routes_file, self.schema))
        env.update({"ICEFEED_LOG_FORMAT": "json", "ICEFEED_LOG_LEVEL": "INFO", "ICEFEED_WORKER_ID": worker_id})
        # The operations endpoint: loopback only, and a port of its own for every worker on this host.
        env.update({"ICEFEED_HTTP_HOST": "127.0.0.1", "ICEFEED_HTTP_PORT": str(free_port())})
        env.update(self.extra_env)
        return env

    def settings_env(self) -> dict[str, str]:
        """The ICEFEED_* variables every worker gets (secrets excluded), for the report."""
        hidden = ("ICEFEED_PG_DSN", "ICEFEED_HTTP_PORT", "ICEFEED_WORKER_ID")
        return {k: v for k, v in self.env().items() if k.startswith("ICEFEED_") and k not in hidden}

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "worker", "migrate"],
            env=self.env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"worker migrate failed ({result.returncode}): {result.stderr[-2000:]}")

    def start(self, label: str, py_spy_out: Path | None = None) -> WorkerProc:
        log_path = self.workdir / f"worker-{label}.log"
        log = log_path.open("wb")
        argv = [sys.executable, "-m", "worker", "run"]
        if py_spy_out is not None:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            py_spy_out.parent.mkdir(parents=True, exist_ok=True)
            argv = [spy, "record", "--idle", "--threads", "--format", "raw", "--rate", "50", "-o", str(py_spy_out)]
            argv += ["--", sys.executable, "-m", "worker", "run"]
        started = time.time()
        popen = subprocess.Popen(  # noqa: S603 - fixed argv
            argv, env=self.env(f"load-{label}"), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        pid = popen.pid
        if py_spy_out is not None:
            pid = _python_child(popen, timeout_s=20)
        proc = WorkerProc(label, popen, pid, log_path, started, log)
        self.procs.append(proc)
        return proc

    def wait_started(self, procs: list[WorkerProc], timeout_s: float = 60) -> None:
        """Until every worker logged ``worker_started`` (or died)."""
        deadline = time.monotonic() + timeout_s
        pending = list(procs)
        while pending and time.monotonic() < deadline:
            for proc in list(pending):
                if proc.popen.poll() is not None:
                    code = proc.popen.returncode
                    raise RuntimeError(f"worker {proc.label} exited with {code}: {tail(proc.log_path)}")
                if any(e.get("event") == "worker_started" for e in events(proc.log_path)):
                    pending.remove(proc)
            time.sleep(0.1)
        if pending:
            raise TimeoutError(f"workers not started after {timeout_s:.0f} s: {[p.label for p in pending]}")

    def alive(self, procs: list[WorkerProc]) -> None:
        for proc in procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"worker {proc.label} died with status {proc.popen.returncode}: {tail(proc.log_path)}"
                )

    def stop(self, procs: list[WorkerProc], timeout_s: float = 90) -> None:
        """SIGTERM (graceful drain), wait, and read each worker's ``worker_stopped`` line."""
        for proc in procs:
            if proc.popen.poll() is None:
                _signal(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc.pid, signal.SIGKILL)
                proc.popen.kill()
                proc.popen.wait(timeout=10)
            proc.exit_code = proc.popen.returncode
            if proc.log is not None:
                proc.log.close()
                proc.log = None
            lines = list(events(proc.log_path))
            stopped = [e for e in lines if e.get("event") == "worker_stopped"]
            proc.stopped = stopped[-1] if stopped else {}
            proc.commits, proc.maintenance = [], []
            for e in lines:
                if e.get("event") == "batch_committed" and "held_s" in e:
                    proc.commits.append(e)
                elif e.get("event") == "maintenance_step":
                    proc.maintenance.append({**e, "after_commit": len(proc.commits)})

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                _signal(proc.pid, signal.SIGKILL)
                proc.popen.kill()
                proc.popen.wait(timeout=10)
            if proc.log is not None:
                proc.log.close()
                proc.log = None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _python_child(popen: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The worker process py-spy launched (py-spy itself is ``popen``)."""
    deadline = time.monotonic() + timeout_s
    parent = psutil.Process(popen.pid)
    while time.monotonic() < deadline:
        for child in parent.children():
            try:
                if "worker" in child.cmdline():
                    return int(child.pid)
            except psutil.Error:
                continue
        if popen.poll() is not None:
            raise RuntimeError(f"py-spy exited with {popen.returncode}")
        time.sleep(0.05)
    raise TimeoutError("py-spy did not start the worker")


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a worker log (other lines are skipped)."""
    try:
        return _json_lines(path.read_text(errors="replace"))
    except OSError:
        return []


def events_from(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The JSON log lines of a growing worker log from byte ``offset`` on (whole lines only), and
    the offset to read on from."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return _json_lines(data[:end].decode(errors="replace")), offset + end


def _json_lines(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def tail(path: Path, chars: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
