"""Resource sampling: RSS and CPU of the worker processes and of the stack's own servers (moto,
Sail) every ~0.5 s, system CPU per phase, and the requests moto served (its request log)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Sample:
    t: float  # epoch seconds
    label: str
    pid: int
    rss: int
    cpu_s: float


@dataclass
class Sampler:
    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _procs: dict[str, psutil.Process] = field(default_factory=dict)
    _last_cpu: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def watch(self, label: str, pid: int) -> None:
        with self._lock:
            self._procs[label] = psutil.Process(pid)

    def unwatch(self, label: str) -> None:
        self.sample_once()
        with self._lock:
            self._procs.pop(label, None)

    def cpu(self, label: str) -> float:
        """CPU seconds (user + system) of a watched process: now, or at its last sample."""
        with self._lock:
            proc = self._procs.get(label)
        if proc is not None:
            try:
                t = proc.cpu_times()
                value = float(t.user + t.system)
                self._last_cpu[label] = value
                return value
            except psutil.Error:
                pass
        return self._last_cpu.get(label, 0.0)

    def sample_once(self) -> None:
        now = time.time()
        with self._lock:
            procs = list(self._procs.items())
        for label, proc in procs:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    t = proc.cpu_times()
            except psutil.Error:
                continue
            cpu = float(t.user + t.system)
            self._last_cpu[label] = cpu
            with self._lock:
                self.samples.append(Sample(now, label, proc.pid, rss, cpu))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def series(self, label: str) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.label == label]


def stack_processes() -> dict[str, int]:
    """moto and Sail, started by this process's Stack (its own children, found by command line)."""
    found: dict[str, int] = {}
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "moto_server" in cmd and "moto" not in found:
            found["moto"] = child.pid
        elif "sail" in cmd and "spark server" in cmd and "sail" not in found:
            found["sail"] = child.pid
    return found


def dead_server(pids: dict[str, int], stack_dir: Path) -> str | None:
    """The first of ``stack_processes`` that died, said with its log; None while all of them run.
    moto and Sail must outlive a run: a crashed server explains every later failure."""
    for label, pid in pids.items():
        try:
            dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            dead = True
        if dead:
            return f"the {label} server (pid {pid}) died; see {stack_dir / label}.log and the kernel log (dmesg)"
    return None


class SystemCpu:
    """System-wide CPU busy fraction between two snapshots (all CPUs; 1.0 = every CPU busy)."""

    def __init__(self) -> None:
        self._t = psutil.cpu_times()

    def busy(self) -> float:
        now = psutil.cpu_times()
        total = sum(now) - sum(self._t)
        idle = (now.idle - self._t.idle) + (getattr(now, "iowait", 0.0) - getattr(self._t, "iowait", 0.0))
        return 0.0 if total <= 0 else max(0.0, min(1.0, 1 - idle / total))


REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


class MotoLog:
    """Counts the requests moto logged between two offsets of its log, by method and bucket role."""

    def __init__(self, path: Path, roles: dict[str, str]) -> None:
        self.path = path
        self.roles = roles

    def offset(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def count(self, start: int, end: int) -> dict[str, int]:
        counts: Counter[str] = Counter()
        try:
            with self.path.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read(max(0, end - start))
        except OSError:
            return {}
        for line in chunk.decode("utf-8", "replace").splitlines():
            m = REQUEST.search(line)
            if not m:
                continue
            path = m.group("path")
            if m.group("method") == "POST" and path.split("?")[0] == "/":
                counts["POST / (SQS, Glue)"] += 1
                continue
            bucket = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
            role = self.roles.get(bucket, "other")
            counts[f"S3 {m.group('method')} {role}"] += 1
        return dict(sorted(counts.items()))


def rss_growth_pct(series: list[Sample], warmup_fraction: float = 0.25) -> float | None:
    """After a warm-up (the first ``warmup_fraction`` of the span), the mean RSS of the last
    quarter of the samples against the mean of the first quarter, in percent."""
    if len(series) < 8:
        return None
    t0, t1 = series[0].t, series[-1].t
    steady = [s for s in series if s.t >= t0 + warmup_fraction * (t1 - t0)]
    q = len(steady) // 4
    if q < 1:
        return None
    first = sum(s.rss for s in steady[:q]) / q
    last = sum(s.rss for s in steady[-q:]) / q
    return round((last - first) / first * 100, 2)
