"""``icefeed preview``: what would happen to a file, without doing it.

The file goes through the load's own code: the same reader (``reader_for``: the route's format,
options and schema hints, plus the columns pinned on the table), the same worker decoding for the
files the worker reads itself (``decode_file``, with the worker's decode limits), the same
inference and schema decision (``read_and_plan``: the sink's ``infer``, then ``plan_batch`` under
the table's policy and approved proposals), and the sample is the first rows the append would
write (the sink's frame for the plan, conformed to the target schema). Nothing is written: the
ledger is only read, the table only described.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from uuid import uuid4

from worker.adapters.local_read import LocalDecoder
from worker.adapters.spark_sink import SparkSink
from worker.admin.common import aws, jsonable, ledger, parse_s3_uri, row, s3_uri, spark_error
from worker.domain.batching import FileWork
from worker.domain.errors import ConfigError, DataError, IcefeedError
from worker.domain.policy import RESCUED_COLUMN, BatchPlan, Policy, data_columns, drop_void
from worker.domain.reading import FILE_TOO_LARGE, parses_locally, too_large, worker_reads
from worker.domain.routing import match_route
from worker.domain.schema import Struct, diff, type_string
from worker.engines import engine_of_table, engine_sink
from worker.pipeline import decode_file, engine_can_read, read_and_plan, reader_for
from worker.ports import WriteRequest, change_json
from worker.routes import AnyIngestion, Routes
from worker.settings import Settings

MAX_ROWS = 10


async def _look(
    sink: SparkSink, request: WriteRequest, policy: Policy, approved: dict[str, str], rows: int
) -> tuple[Struct, list[dict[str, Any]], Struct | None, BatchPlan]:
    """The file read and decided as a batch would (``read_and_plan``), the first rows the append
    would write, and the table's schema. DataError when it cannot be read; other engine errors as
    operator messages."""
    work = request.files[0]
    try:
        inference, plan = await read_and_plan(sink, request, policy, approved)
        unreadable = inference.unreadable.get(work.file_id)
        sample = [] if unreadable is not None else await sink.sample(request, plan, rows)
    except IcefeedError as error:
        raise spark_error(error) from error
    if unreadable is not None:  # it cannot be parsed (DataError), by the worker or the engine
        raise unreadable
    return inference.schemas[work.file_id], sample, inference.table, plan


def columns(schema: Struct | None) -> list[dict[str, Any]] | None:
    if schema is None:
        return None
    return [{"name": f.name, "type": type_string(f.type), "nullable": f.nullable} for f in schema.fields]


def _ingestion(routes: Routes, bucket: str, key: str, name: str | None) -> AnyIngestion:
    if name is not None:
        try:
            return routes.by_name(name)
        except KeyError:
            raise ConfigError(f"no ingestion named {name!r} in the routes file") from None
    rule = match_route(routes.rules, bucket, key)
    if rule is None:
        raise ConfigError(f"no route matches s3://{bucket}/{key}: name one with --ingestion")
    return routes.by_name(rule.name)


async def preview(
    settings: Settings, routes: Routes, uri: str, ingestion: str | None = None, rows: int = MAX_ROWS
) -> dict[str, Any]:
    bucket, key = parse_s3_uri(uri)
    ing = _ingestion(routes, bucket, key, ingestion)
    rows = max(0, min(rows, MAX_ROWS))
    async with ledger(settings) as db:  # reads only
        pinned = await db.worker_ledger().table_hints(ing.table)
        approved = await db.worker_ledger().approved_signatures(ing.table)
        history = await db.file_history(bucket, key)
        result: dict[str, Any] = {
            "uri": s3_uri(bucket, key),
            "ingestion": ing.name,
            "table": ing.table,
            "format": ing.format,
            "policy": ing.schema_policy,
            "hints": {**ing.schema_hints, **pinned},
            "written": False,
        }
        async with aws(settings) as (_, store):
            head = await store.head(bucket, key)
            result["object"] = {"exists": head is not None, "etag": head.etag if head else None}
            result["object"]["size"] = head.size if head else None
            result["ledger"] = [
                {k: v for k, v in row(r).items() if k in ("id", "etag", "status", "rows_loaded", "error_class")}
                for r in history
            ]
            if head is None:
                result["attention"] = [f"{uri}: no such object in S3"]
                return result
            spark = settings.spark
            dialect = routes.dialect_of(ing.table, spark.dialect)  # the table's engine's
            too_big = too_large(
                head.size,
                parses_locally(dialect, ing.whole_file_json),
                spark.local_parse_max_bytes,
                settings.batch.max_file_bytes,
            )
            local = worker_reads(
                dialect, ing.format, ing.whole_file_json, head.size, spark.worker_read_max_bytes, ing.worker_decodes
            )
            if too_big:
                result.update(file_schema=None, sample=[], table_schema=None, diff=[])
                result["decision"] = {
                    "action": "fail",
                    "error_class": FILE_TOO_LARGE,
                    "text": f"FAIL ({FILE_TOO_LARGE}): {too_big}",
                }
                result["attention"] = [f"would be FAILED: {too_big}"]
                return result
            payload = await store.get(bucket, key, head.etag) if local else None
        work = FileWork(0, ing.name, bucket, key, head.etag, head.size)
        request = WriteRequest(uuid4(), ing.table, ing.location, {ing.name: reader_for(ing, pinned)}, [work], 1)
        if payload is not None:  # a file the worker reads itself: decoded as a batch decodes it
            engine_reads = engine_can_read(parses_locally(dialect, ing.whole_file_json) or ing.worker_decodes, key)
            decoder = LocalDecoder.for_settings(spark)
            decoded = decode_file(decoder, payload, key, ing.whole_file_json, engine_reads, ing.text_rule)
            request = replace(request, decoded={} if decoded is None else {work.file_id: decoded})
            bad = getattr(decoded, "bad", ())
            if ing.bad_records == "quarantine" and not isinstance(decoded, IcefeedError):
                result["bad_records"] = {
                    "rows_rejected": len(bad),
                    "samples": [
                        {"line": b.line, "offset": b.offset, "error": b.error, "text": b.text} for b in bad[:3]
                    ],
                }
        # Read-only, on a session that fails fast when the cluster is unreachable: an operator
        # waits seconds for "cluster unreachable", not the client's default ten minutes of retries.
        sink = engine_sink(settings.spark, engine_of_table(routes, ing.table), fail_fast=True)
        try:
            schema, sample, table, plan = await _look(sink, request, Policy(ing.schema_policy), approved, rows)
        except DataError as error:
            result.update(file_schema=None, sample=[], table_schema=None, diff=[])
            text = f"FAIL ({error.error_class}): {error}"
            result["decision"] = {"action": "fail", "error_class": error.error_class, "text": text}
            result["attention"] = [f"would be FAILED ({error.error_class}): the engine cannot read it"]
            return result
        finally:
            await asyncio.to_thread(sink.close)
        decision = plan.decisions[0]
        open_proposal = None
        if not decision.load:
            open_proposal = await db.open_proposal_for(ing.table, decision.signature)
    incoming = drop_void(data_columns(schema))
    result.update(
        file_schema=columns(schema),
        sample=[jsonable(r) for r in sample],
        table_schema=columns(table),
        diff=[change_json(c) for c in (diff(table, incoming) if table is not None else [])],
        decision=_decision(ing, plan, decision, open_proposal),
    )
    result["attention"] = [] if decision.load else [f"would be QUARANTINED: {decision.reason}"]
    return result


def _decision(ing: AnyIngestion, plan: Any, decision: Any, open_proposal: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": "load" if decision.load else "quarantine",
        "table_changes": [change_json(c) for c in plan.table_changes],
        "rescued": list(decision.rescued),
        "signature": decision.signature or None,
        "open_proposal": open_proposal,
    }
    if not decision.load:
        kind = decision.error_class
        out["error_class"] = kind
        joins = f"; it would join open proposal #{open_proposal}" if open_proposal else "; it would open a proposal"
        out["text"] = f"QUARANTINE ({kind}, policy {ing.schema_policy}): {decision.reason}{joins}"
    elif plan.creates_table:
        out["text"] = f"LOAD: creates {ing.table} with the file's {len(plan.target.fields)} column(s)"
    elif decision.rescued:
        out["text"] = f"LOAD: column(s) {', '.join(decision.rescued)} go into {RESCUED_COLUMN}"
    elif plan.table_changes:
        changes = "; ".join(str(c) for c in plan.table_changes)
        out["text"] = f"LOAD: the table evolves in the same commit: {changes}"
    else:
        out["text"] = "LOAD: the file fits the table as it is"
    if decision.load and decision.signature:
        out["text"] += " (as an approved proposal allows)"
    return out
