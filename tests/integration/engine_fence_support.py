"""A writer process for the engine-fence tests: it opens a write session through ``SparkSink``
(as the pipeline does), then appends a slow DataFrame to a table through the dialect's own append
in that session, and reports on stdout what happened:

    opened            the session exists on the server
    appending         the append is being sent
    committed         the append returned
    failed <class>    the append raised; <class> is icefeed's classification of the error
    followup <class>  a later request in the same session (``ok`` or the error class)

The append is slow without burning CPU: a Python UDF sleeps ``delay_s`` per row, in two partitions.
With MARKER, the UDF creates that file when it computes its first row: the append is then running
on the server (a test that stops "a running append" waits for it; "appending" only says the
request is on its way, and a loaded engine may not have registered the operation yet).
Run: python -m tests.integration.engine_fence_support URL DIALECT FORMAT SESSION TABLE ROWS DELAY_S [MARKER]
"""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from worker.adapters.local_read import decode_json
from worker.adapters.spark_sink import SparkSink, to_icefeed_error
from worker.domain.batching import FileWork
from worker.domain.policy import BatchPlan, Policy, plan_batch
from worker.ports import Reader, WriteRequest
from worker.settings import SparkSettings


def slow_frame(spark: Any, rows: int, delay_s: float, marker: str = "") -> Any:
    from pyspark.sql import functions as F

    @F.udf("string")
    def slow(value: int) -> str:
        import time as clock

        if marker:
            open(marker, "a").close()
        clock.sleep(delay_s)
        return f"row-{value}"

    return spark.range(0, rows, 1, 2).select(F.col("id"), slow("id").alias("h"))


@dataclass(frozen=True)
class Written:
    counts: dict[str, int]
    plan: BatchPlan


async def write_once(sink: SparkSink, request: WriteRequest) -> Written:
    """One write as the pipeline makes it: infer, plan (policy evolve), append."""
    inference = await sink.infer(request)
    readable = [(f.file_id, inference.schemas[f.file_id]) for f in request.files if f.file_id in inference.schemas]
    plan = plan_batch(Policy.EVOLVE, inference.table, readable, {})
    return Written(await sink.append(request, plan), plan)


def one_file_request(table: str, location: str, session_id: str, batch_id: UUID, ids: list[int]) -> WriteRequest:
    """A write of one worker-decoded JSON-lines file (``{"id": …}`` per line) in ``session_id``."""
    body = "".join(f'{{"id": {i}}}\n' for i in ids).encode()
    return WriteRequest(
        batch_id=batch_id,
        table=table,
        location=location,
        readers={"events": Reader("json", {})},
        files=[FileWork(1, "events", "land", "events/a.json", "etag-1", len(body))],
        output_files=1,
        decoded={1: decode_json(body, whole_file=False, compressed=False)},
        session_id=session_id,
    )


def main(argv: list[str]) -> None:
    url, dialect, table_format, session_id, table, rows, delay_s, *rest = argv
    settings = SparkSettings(url=url, dialect=dialect, table_format=table_format)  # type: ignore[arg-type]
    sink = SparkSink(settings)
    asyncio.run(sink.open_session(session_id))
    print("opened", flush=True)
    spark = sink._write_session(session_id)  # the session open_session made, as write() uses it
    df = slow_frame(spark, int(rows), float(delay_s), rest[0] if rest else "")
    print("appending", flush=True)
    try:
        sink._dialect.append(df, table)
        print("committed", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported, classified
        error = to_icefeed_error(exc)
        print("failed", error.error_class, str(error).replace("\n", " ")[:300], flush=True)
    try:
        spark.sql("SELECT 1").collect()
        print("followup ok", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported, classified
        print("followup", to_icefeed_error(exc).error_class, flush=True)


@dataclass
class WriterProcess:
    """The writer above as a child process, its stdout lines delivered to a queue."""

    argv: list[str]
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    pump: threading.Thread | None = None

    def start(self) -> WriterProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.engine_fence_support", *self.argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line.strip())
        self.lines.put("")  # end of output

    def expect(self, prefix: str, timeout: float = 120.0) -> str:
        """The next line starting with ``prefix`` (waits for it up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"writer: no {prefix!r} within {timeout:.0f} s; saw {self.seen}") from None
            if line == "":
                raise AssertionError(f"writer ended without {prefix!r}; saw {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 120.0) -> list[str]:
        """Every further line until the process exits."""
        assert self.proc is not None
        self.proc.wait(timeout=timeout)
        out = []
        while (line := self.lines.get(timeout=timeout)) != "":
            out.append(line)
        self.seen.extend(out)
        return out

    def kill(self) -> None:
        """SIGKILL (if still running), and wait until its output is closed."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        if self.pump is not None:
            self.pump.join(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1:])
