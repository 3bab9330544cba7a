"""``icefeed cost``: the monthly cost of ingestion, for a given volume or from the ledger's last days.

The arithmetic is ``worker.domain.cost`` (pure); this module resolves its inputs (flags win over
the ledger's measurements, which win over the defaults), reads the ledger for ``--from-ledger``,
and turns the estimate into the JSON-able result that ``--json`` prints and ``render.cost``
shows. Prices and per-commit request counts are the ``ICEFEED_COST_*`` settings (docs/cost.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from worker.admin.common import jsonable, ledger
from worker.domain import cost as model
from worker.domain.errors import ConfigError
from worker.routes import Routes
from worker.settings import Settings

#: Assumed engine time of a commit when nothing better is known (no --from-ledger, no flag): about
#: a second of fixed cost (GetTable, the writes, UpdateTable in sequence against AWS) and the
#: order of the per-file time the local stack measured (load/README.md). Measure yours.
DEFAULT_ENGINE_S_PER_COMMIT = 1.0
DEFAULT_ENGINE_S_PER_FILE = 0.02
#: A steady flow long-polled by idle receivers returns about one message per receive (a long
#: poll ends at the first message); a backlog fills every receive (ICEFEED_SQS_MAX_MESSAGES).
DEFAULT_MESSAGES_PER_RECEIVE = 1.0
DEFAULT_DAYS = 7
FORMATS = ("json", "csv", "parquet")


@dataclass(frozen=True)
class CostOptions:
    """The command's flags (``None``: not given)."""

    files_per_day: float | None = None
    avg_file_bytes: float | None = None
    rows_per_file: float | None = None
    tables: int | None = None
    from_ledger: bool = False
    days: int = DEFAULT_DAYS
    workers: int | None = None
    messages_per_receive: float | None = None
    files_per_commit: float | None = None
    engine_s_per_commit: float | None = None
    engine_s_per_file: float | None = None
    file_format: str | None = None
    retry_pct: float | None = None
    backfill_files: float = 0.0
    poll_interval_s: float = 60.0
    poll_prefixes: int | None = None

    def check(self) -> None:
        if self.files_per_day is None and not self.from_ledger:
            raise ConfigError("give a volume (--files-per-day N), or --from-ledger [--days N]")
        if not 1 <= self.days <= 366:
            raise ConfigError("--days must be between 1 and 366")
        if self.file_format is not None and self.file_format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
        if self.retry_pct is not None and not 0 <= self.retry_pct <= 1000:
            raise ConfigError("--retry-pct must be between 0 and 1000")
        for name in ("avg_file_bytes", "rows_per_file", "backfill_files"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more")
        for name in ("tables", "workers", "poll_prefixes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")


class _Inputs:
    """Each input's value and where it came from."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def pick(self, name: str, flag: Any, flag_name: str, *fallbacks: tuple[Any, str]) -> Any:
        if flag is not None:
            self.values[name], self.sources[name] = flag, flag_name
            return flag
        for value, source in fallbacks:
            if value is not None:
                self.values[name], self.sources[name] = value, source
                return value
        self.values[name], self.sources[name] = None, "unknown"
        return None

    def rows(self) -> list[dict[str, Any]]:
        return [{"name": n, "value": v, "source": self.sources[n]} for n, v in self.values.items()]


async def measure(settings: Settings, routes: Routes | None, days: int) -> dict[str, Any]:
    """What the ledger says about the last ``days`` days of loading."""
    async with ledger(settings) as db:
        raw = await db.cost_figures(days, settings.spark.worker_read_max_bytes)
    return summarize(raw, routes, days)


def summarize(raw: dict[str, Any], routes: Routes | None, days: int) -> dict[str, Any]:
    """The ledger's rows (``OperatorLedger.cost_figures``) as the figures the estimate needs.

    ``observed_days``: the window, or less when the oldest load in it is younger (a new ledger);
    engine-read files: those of CSV / Parquet routes, and JSON files over the worker-read limit."""
    files = sum(int(r["files"]) for r in raw["files"])
    out: dict[str, Any] = {"days": days, "files": files}
    if not files:
        return out
    first = min(r["first_finished_at"] for r in raw["files"])
    now = raw["files"][0]["now"]
    observed = min(float(days), max((now - first).total_seconds(), 1.0) / model.SECONDS_PER_DAY)
    engine_files = 0
    for r in raw["files"]:
        fmt = _format(routes, r["ingestion"])
        engine_files += int(r["files"]) if fmt != "json" else int(r["files"]) - int(r["small_files"])
    b = raw["batches"]
    out.update(
        observed_days=observed,
        files_per_day=files / observed,
        avg_file_bytes=sum(int(r["bytes"]) for r in raw["files"]) / files,
        rows_per_file=sum(int(r["rows"]) for r in raw["files"]) / files,
        engine_read_fraction=engine_files / files,
        retry_fraction=sum(int(r["retries"]) for r in raw["files"]) / files,
        commits=int(b["commits"]),
        tables=int(b["tables"]),
        lease_owners=int(b["owners"]),
        files_per_commit=files / int(b["commits"]) if b["commits"] else None,
        timed_commits=int(b["timed"]),
    )
    if b["timed"]:
        fit = model.engine_fit(float(b["timed_files_mean"]), float(b["engine_s_mean"]), _float(b["engine_s_intercept"]))
        out.update(
            engine_s_mean=float(b["engine_s_mean"]),
            engine_s_per_commit=fit.per_commit_s,
            engine_s_per_file=fit.per_file_s,
            engine_fit=fit.how,
        )
    size = raw["size"]
    if size is not None and size["files_rows"] and size["files_rows"] > 0:
        out.update(
            ledger_files_bytes=int(size["files_bytes"]), ledger_bytes_per_file=size["files_bytes"] / size["files_rows"]
        )
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _format(routes: Routes | None, ingestion: str) -> str:
    if routes is None:
        return "json"
    try:
        return str(routes.by_name(ingestion).format)
    except KeyError:
        return "json"  # an ingestion no longer in the routes file


async def cost(settings: Settings, routes: Routes | None, options: CostOptions) -> dict[str, Any]:
    options.check()
    measured = await measure(settings, routes, options.days) if options.from_ledger else None
    if measured is not None and not measured["files"] and options.files_per_day is None:
        raise ConfigError(f"the ledger has no file LOADED in the last {options.days} day(s): give --files-per-day")
    return build(settings, routes, options, measured)


def build(
    settings: Settings, routes: Routes | None, options: CostOptions, measured: dict[str, Any] | None
) -> dict[str, Any]:
    """The estimate for these options and measurements, as a JSON-able result."""
    m = measured if measured and measured["files"] else {}
    tag = f"ledger, {m['observed_days']:.3g} day(s)" if m else ""
    inp = _Inputs()
    files_per_day = inp.pick("files_per_day", options.files_per_day, "--files-per-day", (m.get("files_per_day"), tag))
    avg_bytes = inp.pick("avg_file_bytes", options.avg_file_bytes, "--avg-file-bytes", (m.get("avg_file_bytes"), tag))
    inp.pick("rows_per_file", options.rows_per_file, "--rows-per-file", (m.get("rows_per_file"), tag))
    route_tables = len(routes.tables) if routes is not None else None
    tables = inp.pick(
        "tables",
        options.tables,
        "--tables",
        (m.get("tables") or None, tag),
        (route_tables, "routes file"),
        (1, "default"),
    )
    # A measured batch size holds only for the measured volume.
    projected = options.files_per_day is not None
    fpc = inp.pick(
        "files_per_commit",
        options.files_per_commit,
        "--files-per-commit",
        (None if projected else m.get("files_per_commit"), tag),
    )
    inp.pick(
        "engine_s_per_commit",
        options.engine_s_per_commit,
        "--engine-s-per-commit",
        (m.get("engine_s_per_commit"), f"{tag}: {m.get('engine_fit')}"),
        (DEFAULT_ENGINE_S_PER_COMMIT, "default (assumed: measure with --from-ledger)"),
    )
    inp.pick(
        "engine_s_per_file",
        options.engine_s_per_file,
        "--engine-s-per-file",
        (m.get("engine_s_per_file"), f"{tag}: {m.get('engine_fit')}"),
        (DEFAULT_ENGINE_S_PER_FILE, "default (assumed: measure with --from-ledger)"),
    )
    inp.pick(
        "messages_per_receive",
        options.messages_per_receive,
        "--messages-per-receive",
        (DEFAULT_MESSAGES_PER_RECEIVE, "default (a steady flow; a backlog fills receives of 10)"),
    )
    fmt = options.file_format
    worker_max = settings.spark.worker_read_max_bytes
    if fmt is not None:
        too_big = avg_bytes is not None and avg_bytes > worker_max
        engine_fraction, fraction_source = (1.0 if fmt != "json" or too_big else 0.0), "--format, --avg-file-bytes"
    elif "engine_read_fraction" in m:
        engine_fraction, fraction_source = m["engine_read_fraction"], f"{tag}: routes' formats, file sizes"
    else:
        too_big = avg_bytes is not None and avg_bytes > worker_max
        engine_fraction = 1.0 if too_big else 0.0
        fraction_source = "JSON files" + (" over" if too_big else " within") + " ICEFEED_SPARK_WORKER_READ_MAX_BYTES"
    inp.pick("engine_read_fraction", engine_fraction, fraction_source)
    retry = options.retry_pct / 100 if options.retry_pct is not None else None
    inp.pick("retry_fraction", retry, "--retry-pct", (m.get("retry_fraction"), tag), (0.0, "default"))
    workers = inp.pick("workers", options.workers, "--workers", (1, "default"))
    inp.pick("backfill_files_per_month", options.backfill_files, "--backfill-files")
    inp.pick("poll_interval_s", options.poll_interval_s, "--poll-interval-s")
    inp.pick("poll_prefixes", options.poll_prefixes, "--poll-prefixes", (tables, "one per table"))
    v = inp.values
    workload = model.Workload(
        files_per_day=float(files_per_day),
        tables=int(tables),
        engine_s_per_commit=float(v["engine_s_per_commit"]),
        engine_s_per_file=float(v["engine_s_per_file"]),
        messages_per_receive=float(v["messages_per_receive"]),
        avg_file_bytes=avg_bytes,
        rows_per_file=v["rows_per_file"],
        engine_read_fraction=float(v["engine_read_fraction"]),
        files_per_commit=fpc,
        retry_fraction=float(v["retry_fraction"]),
        backfill_files_per_month=float(v["backfill_files_per_month"]),
        poll_interval_s=float(v["poll_interval_s"]),
        poll_prefixes=int(v["poll_prefixes"]),
    )
    fleet = fleet_of(settings, routes, int(workers))
    measured_batches = bool(m) and inp.sources["files_per_commit"] == tag
    est = model.estimate(workload, fleet, mechanics_of(settings), prices_of(settings), measured_batches)
    if fpc is None:
        inp.values["files_per_commit"] = est.batching.files_per_commit
        inp.sources["files_per_commit"] = f"predicted: {est.batching.bound} bound"
    return result(est, inp.rows(), measured, settings, fleet)


def fleet_of(settings: Settings, routes: Routes | None, workers: int) -> model.Fleet:
    """The fleet as the settings configure it; maintenance as the routes file's default block says
    (the product default without a routes file), ``None`` when it is off."""
    from worker.domain.maintenance import MaintenancePolicy

    policy = (
        routes.maintenance.policy(routes.tables[0]) if routes is not None and routes.tables else MaintenancePolicy()
    )
    return model.Fleet(
        workers=workers,
        queues=max(1, len(settings.sqs.queue_urls)),
        receivers_per_queue=settings.sqs.receivers,
        wait_time_s=settings.sqs.wait_time_s,
        max_messages=settings.sqs.max_messages,
        batch_max_files=settings.batch.max_files,
        batch_max_wait_s=settings.batch.max_wait_s,
        output_files=settings.batch.output_files,
        maintenance=policy if policy.enabled else None,
    )


def prices_of(settings: Settings) -> model.Prices:
    c = settings.cost
    return model.Prices(
        sqs_usd_per_million=c.sqs_usd_per_million,
        s3_get_usd_per_1000=c.s3_get_usd_per_1000,
        s3_put_usd_per_1000=c.s3_put_usd_per_1000,
        catalog_usd_per_million=c.catalog_usd_per_million,
        engine_usd_per_hour=c.engine_usd_per_hour,
        pg_usd_per_month=c.pg_usd_per_month,
        worker_usd_per_hour=c.worker_usd_per_hour,
    )


def mechanics_of(settings: Settings) -> model.Mechanics:
    c = settings.cost
    return model.Mechanics(
        catalog_calls_per_commit=c.catalog_calls_per_commit,
        metadata_reads_per_commit=c.metadata_reads_per_commit,
        metadata_writes_per_commit=c.metadata_writes_per_commit,
        engine_reads_per_file=c.engine_reads_per_file,
    )


def scenario_dict(s: model.Scenario) -> dict[str, Any]:
    return {
        "name": s.name,
        "total_usd": s.total_usd,
        "components_usd": {c: s.component_usd(c) for c in model.COMPONENTS},
        "requests_per_file": {c: s.per_file(c) for c in ("SQS", "S3 reads", "S3 writes", "catalog")},
        "commits_per_month": s.commits_per_month,
        "commits_per_1000_files": s.commits_per_1000_files,
        "lines": [{**asdict(line), "cost_usd": line.cost_usd} for line in s.lines],
        "notes": list(s.notes),
    }


def result(
    est: model.Estimate,
    inputs: list[dict[str, Any]],
    measured: dict[str, Any] | None,
    settings: Settings,
    fleet: model.Fleet,
) -> dict[str, Any]:
    w = est.workload
    return {
        "files_per_month": w.files_per_month,
        "inputs": inputs,
        "fleet": {k: v for k, v in asdict(fleet).items() if k != "maintenance"}
        | {"maintenance": asdict(fleet.maintenance) if fleet.maintenance else None},
        "measured": jsonable(measured),
        "prices": settings.cost.model_dump(),
        "batching": asdict(est.batching),
        "engine_s_per_commit_total": est.engine_s_per_commit_total,
        "scenarios": [scenario_dict(s) for s in est.scenarios],
        "notes": list(est.notes),
        "attention": [],
    }
