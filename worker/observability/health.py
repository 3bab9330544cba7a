"""The operations endpoint: ``GET /metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness).

A deliberately tiny HTTP/1.1 server on ``asyncio.start_server`` (one request per connection, GET
and HEAD only). It runs inside the worker's event loop, so an answer at all proves the loop is
responsive; ``/healthz`` adds what the process knows about itself (receivers alive, heartbeat
ticking, timer lag) and never depends on other servers, so a PostgreSQL or Spark outage makes the
pod unready, not restarted. ``/readyz`` runs the dependency probes it is given (``worker.probes`` builds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from worker.observability.logging import Redactor
from worker.observability.metrics import Metrics
from worker.observability.probe_result import ProbeResult

log = structlog.get_logger("icefeed.http")

#: /healthz fails when the event loop's one-second timer fired this late.
MAX_LOOP_LAG_S = 10.0
REQUEST_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
JSON = "application/json"

#: name → (ok, detail)
Checks = dict[str, tuple[bool, str]]
#: A label value in the Prometheus text format: name="escaped value".
LABEL_VALUE = re.compile(rb'([a-zA-Z_][a-zA-Z0-9_]*=")((?:[^"\\]|\\.)*)(")')


class HealthServer:
    def __init__(
        self,
        metrics: Metrics,
        readiness: Callable[[], Awaitable[list[ProbeResult]]],
        liveness: Callable[[], Checks],
        host: str = "0.0.0.0",  # noqa: S104 - probed by the kubelet, scraped by Prometheus
        port: int = 9108,
        redactor: Redactor | None = None,
    ) -> None:
        self.metrics = metrics
        self._redactor = redactor or Redactor()  # masks secrets in /readyz, /healthz and metric labels
        self._readiness = readiness
        self._liveness = liveness
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.loop_lag_s = 0.0
        self._tick_at = time.monotonic()
        self._ticking = False
        self.port = 0

    # -- lifetime -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port (errors surface here, before the worker takes any message)."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=16384)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("http_listening", host=self._host, port=self.port)

    async def serve(self) -> None:
        """The side task: serve until cancelled, and time the event loop once a second."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._server.serve_forever())
            tasks.create_task(self._tick())

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _tick(self) -> None:
        while True:
            self._ticking = True
            expected = time.monotonic() + 1.0
            await asyncio.sleep(1.0)
            self._tick_at = time.monotonic()
            self.loop_lag_s = max(0.0, self._tick_at - expected)
            self.metrics.event_loop_lag.set(self.loop_lag_s)

    # -- checks -------------------------------------------------------------------------------

    def liveness(self) -> Checks:
        checks = dict(self._liveness())
        since = time.monotonic() - self._tick_at
        lag = max(self.loop_lag_s, since - 1.0) if self._ticking else 0.0
        checks["event_loop"] = (lag < MAX_LOOP_LAG_S, f"timer lag {lag * 1000:.0f} ms")
        return checks

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    method, path = await _read_request(reader)
            except (TimeoutError, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                await _respond(writer, "GET", 400, "text/plain; charset=utf-8", b"bad request\n")
                return
            status, content_type, body, extra = await self._route(method, path)
            await _respond(writer, method, status, content_type, body, extra)
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._handlers.discard(task)

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        if path not in ("/metrics", "/healthz", "/readyz", "/"):
            return 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n", {}
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path == "/metrics":
            return 200, CONTENT_TYPE_PLAIN_0_0_4, self._scrub_labels(generate_latest(self.metrics.registry)), {}
        if path == "/healthz":
            checks = self.liveness()
            live = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}
            return _checks_response(self._redactor.redact(live))
        if path == "/readyz":
            results = await self._readiness()
            return _checks_response(self._redactor.redact({r.name: r.as_dict() for r in results}))
        return 200, "text/plain; charset=utf-8", b"icefeed worker: /metrics /healthz /readyz\n", {}

    def _scrub_labels(self, exposition: bytes) -> bytes:
        """Metric and label names are fixed; label values (a queue's name, an error class) are
        scrubbed like any other output."""
        scrub = self._redactor.scrub

        def value(m: re.Match[bytes]) -> bytes:
            text = m.group(2).decode("utf-8", "replace")
            return m.group(1) + scrub(text).encode() + m.group(3)

        return LABEL_VALUE.sub(value, exposition)


def _checks_response(checks: dict[str, dict[str, Any]]) -> tuple[int, str, bytes, dict[str, str]]:
    ok = all(c["ok"] for c in checks.values())
    body = orjson.dumps({"status": "ok" if ok else "failing", "checks": checks}, option=orjson.OPT_INDENT_2)
    return (200 if ok else 503), JSON, body + b"\n", {}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    line = (await reader.readline()).decode("latin-1").strip()
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"not an HTTP request line: {line[:80]!r}")
    for _ in range(MAX_HEADER_LINES):  # headers are read and ignored
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            return parts[0].upper(), urlsplit(parts[1]).path
    raise ValueError("too many header lines")


async def _respond(
    writer: asyncio.StreamWriter,
    method: str,
    status: int,
    content_type: str,
    body: bytes,
    extra: dict[str, str] | None = None,
) -> None:
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "Connection": "close",
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode("latin-1") + b"\r\n" + (b"" if method == "HEAD" else body))
    await writer.drain()


def runner_liveness(runner: Any, stopping: Callable[[], bool]) -> Callable[[], Checks]:
    """Liveness of a ``Runner``: its receivers are alive (unless it is stopping) and its
    heartbeat loop completed a round recently (3 intervals, plus a minute for one slow call)."""

    def checks() -> Checks:
        out: Checks = {}
        receivers = list(runner.receivers)
        dead = [t for t in receivers if t.done()]
        if stopping():
            out["receivers"] = (True, "stopping: receivers finish their last poll")
        elif not receivers:
            out["receivers"] = (True, "starting")
        else:
            out["receivers"] = (not dead, f"{len(receivers) - len(dead)} of {len(receivers)} running")
        age = time.monotonic() - runner.heartbeat_at
        limit = 3 * runner.heartbeat_interval + 60
        out["heartbeat"] = (age < limit, f"last round {age:.0f} s ago (limit {limit:.0f} s)")
        return out

    return checks
