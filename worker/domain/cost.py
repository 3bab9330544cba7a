"""The monthly cost of ingestion, by component (pure: dataclasses in, dataclasses out).

``estimate`` prices one month of a workload three ways, side by side:

- **icefeed**: what the worker does per file and per commit (worker/runner.py, worker/pipeline.py):
  long-poll receives of up to 10 messages, deletes in chunks of 10 per queue after each commit, no
  HEAD and one GET per small JSON file (the GET's If-Match settles existence), two HEADs plus the
  engine's own reads for a file the engine reads by path, one Iceberg commit per batch, a
  PostgreSQL ledger, amortised table maintenance;
- **per-file loop**: the seed design (load/naive.py): one message → one engine read → one commit
  → one DeleteMessage, no ledger;
- **polling**: no queue: ListObjectsV2 every N seconds per prefix, a GET per new object, one
  commit per poll that found files, no ledger.

Every quantity is a :class:`Line` with its formula written out in words and numbers, so a figure
can be checked by hand. Units are in the names (``_usd``, ``_s``, ``_per_file``, ``_per_commit``).
Nothing here knows the settings objects or the ledger: ``worker/admin/cost.py`` builds the inputs
(from flags, the ledger and ``ICEFEED_COST_*``) and renders the result. The model, its inputs and
its limits are described in docs/cost.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from worker.domain.errors import ConfigError
from worker.domain.maintenance import MaintenancePolicy

SECONDS_PER_DAY = 86_400
DAYS_PER_MONTH = 30  # volumes: "a month" is 30 days of the workload
SECONDS_PER_MONTH = SECONDS_PER_DAY * DAYS_PER_MONTH
HOURS_PER_MONTH = 730  # AWS bills an always-on instance 8,760 / 12 = 730 hours a month
SQS_BATCH = 10  # DeleteMessageBatch / ChangeMessageVisibilityBatch / SendMessageBatch entries
LIST_PAGE = 1000  # keys per ListObjectsV2 page

#: The components of a bill, in the order they are shown.
COMPONENTS = ("SQS", "S3 reads", "S3 writes", "catalog", "engine", "PostgreSQL", "workers")


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    """Unit prices in USD (the ``ICEFEED_COST_*`` settings; list prices by default)."""

    sqs_usd_per_million: float  # SQS standard requests (each 64 KB chunk of a payload is one)
    s3_get_usd_per_1000: float  # GET, HEAD and other read requests
    s3_put_usd_per_1000: float  # PUT, COPY, POST, LIST requests
    catalog_usd_per_million: float  # Glue Data Catalog requests
    engine_usd_per_hour: float  # one hour of the Spark Connect cluster
    pg_usd_per_month: float  # the ledger's PostgreSQL (instance + storage)
    worker_usd_per_hour: float  # one worker pod

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value >= 0:
                raise ConfigError(f"price {name} must be 0 or more, got {value}")


@dataclass(frozen=True)
class Mechanics:
    """Requests that depend on the engine and its catalog, not on icefeed (``ICEFEED_COST_*``):
    what one Iceberg append and one engine read of a file cost in requests."""

    catalog_calls_per_commit: float  # Glue: GetTable to plan the append, GetTable + UpdateTable to commit
    metadata_reads_per_commit: float  # S3 GET: the current metadata.json and manifest list
    metadata_writes_per_commit: float  # S3 PUT: a manifest, a manifest list, a metadata.json
    engine_reads_per_file: float  # S3 GET/HEAD the engine makes to read one file by path

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value >= 0:
                raise ConfigError(f"{name} must be 0 or more, got {value}")


@dataclass(frozen=True)
class Fleet:
    """The worker fleet and its settings (``ICEFEED_SQS_*``, ``ICEFEED_BATCH_*``, the routes'
    ``[maintenance]``; ``None``: no table maintenance)."""

    workers: int
    queues: int
    receivers_per_queue: int
    wait_time_s: float
    max_messages: int
    batch_max_files: int
    batch_max_wait_s: float
    output_files: int
    maintenance: MaintenancePolicy | None = None

    def __post_init__(self) -> None:
        for name in ("workers", "queues", "receivers_per_queue", "max_messages", "batch_max_files", "output_files"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.wait_time_s < 0 or self.batch_max_wait_s < 0:
            raise ConfigError("wait times must be 0 or more")

    @property
    def pollers(self) -> int:
        """Long-poll loops fleet-wide: each worker runs ``receivers_per_queue`` per queue."""
        return self.workers * self.queues * self.receivers_per_queue


@dataclass(frozen=True)
class Workload:
    """What arrives and what a commit costs the engine.

    ``engine_s_per_commit`` + ``engine_s_per_file`` × files is the engine time of one commit (the
    append and its ledger finalize, under the table lock): measured by ``icefeed cost
    --from-ledger``, assumed otherwise. ``files_per_commit`` ``None``: predicted from the rate and
    the batch settings (:func:`batching`). ``engine_read_fraction``: the share of files the engine
    reads by path (CSV, Parquet, JSON over ``ICEFEED_SPARK_WORKER_READ_MAX_BYTES``); the worker
    GETs the others itself. ``retry_fraction``: extra attempts per file (a retried file is
    received, read and acked again)."""

    files_per_day: float
    tables: int
    engine_s_per_commit: float
    engine_s_per_file: float
    messages_per_receive: float
    avg_file_bytes: float | None = None
    rows_per_file: float | None = None
    engine_read_fraction: float = 0.0
    files_per_commit: float | None = None
    retry_fraction: float = 0.0
    backfill_files_per_month: float = 0.0
    poll_interval_s: float = 60.0
    poll_prefixes: int = 1

    def __post_init__(self) -> None:
        if not self.files_per_day > 0:
            raise ConfigError(f"files per day must be positive, got {self.files_per_day}")
        if self.tables < 1 or self.poll_prefixes < 1:
            raise ConfigError("tables and poll prefixes must be at least 1")
        if not 1 <= self.messages_per_receive <= SQS_BATCH:
            raise ConfigError(f"messages per receive must be between 1 and 10, got {self.messages_per_receive}")
        if not 0 <= self.engine_read_fraction <= 1:
            raise ConfigError(f"engine read fraction must be between 0 and 1, got {self.engine_read_fraction}")
        if self.files_per_commit is not None and not self.files_per_commit >= 1:
            raise ConfigError(f"files per commit must be at least 1, got {self.files_per_commit}")
        for name in ("engine_s_per_commit", "engine_s_per_file", "retry_fraction", "backfill_files_per_month"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not self.poll_interval_s > 0:
            raise ConfigError(f"poll interval must be positive, got {self.poll_interval_s}")

    @property
    def files_per_month(self) -> float:
        return self.files_per_day * DAYS_PER_MONTH

    @property
    def files_per_s(self) -> float:
        return self.files_per_day / SECONDS_PER_DAY


# -- outputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One priced quantity of a month: ``quantity`` ``unit`` × ``unit_usd`` (per ``per`` units)."""

    component: str  # one of COMPONENTS
    item: str
    quantity: float
    unit: str
    unit_usd: float  # price of ``per`` units
    per: float
    formula: str

    @property
    def cost_usd(self) -> float:
        return self.quantity / self.per * self.unit_usd


@dataclass(frozen=True)
class Batching:
    """Files per commit and which bound set it."""

    files_per_commit: float
    bound: str  # measured | input | wait | lock | max_files | overloaded
    formula: str


@dataclass(frozen=True)
class Scenario:
    name: str
    files_per_month: float
    commits_per_month: float
    lines: tuple[Line, ...]
    notes: tuple[str, ...] = ()

    @property
    def total_usd(self) -> float:
        return sum(line.cost_usd for line in self.lines)

    def component_usd(self, component: str) -> float:
        return sum(line.cost_usd for line in self.lines if line.component == component)

    def quantity(self, component: str) -> float:
        return sum(line.quantity for line in self.lines if line.component == component)

    def per_file(self, component: str) -> float:
        """Requests (or calls) of one component per file."""
        return self.quantity(component) / self.files_per_month

    @property
    def commits_per_1000_files(self) -> float:
        return self.commits_per_month / self.files_per_month * 1000


@dataclass(frozen=True)
class Estimate:
    workload: Workload
    batching: Batching
    engine_s_per_commit_total: float  # engine time of one icefeed commit at its files per commit
    scenarios: tuple[Scenario, ...]
    notes: tuple[str, ...] = field(default=())

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.scenarios if s.name == name)


# -- the pieces -----------------------------------------------------------------------------------


def _n(x: float) -> str:
    """A number for a formula: thousands separated, at most 4 significant decimals."""
    if abs(x - round(x)) <= 1e-9 * max(1.0, abs(x)) and abs(x) < 1e15:
        return f"{round(x):,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def empty_receives_per_s(arrivals_per_s: float, wait_s: float) -> float:
    """Empty long polls per second of ONE poller that sees ``arrivals_per_s`` messages.

    A long poll ends at the first message (a non-empty receive) or after ``wait_s`` (an empty one).
    With steady (Poisson) arrivals at rate λ, a poll is empty with probability e^(−λW) and lasts
    (1 − e^(−λW)) / λ on average, so empty polls per second = λ / (e^(λW) − 1): 1/W for an idle
    queue (3 a minute at W = 20 s), next to nothing once λW is a few units. W = 0 (short polling):
    every poll returns at once; counted as one per second (a loop with no wait has no bound)."""
    if wait_s <= 0:
        return 1.0
    if arrivals_per_s <= 0:
        return 1.0 / wait_s
    x = arrivals_per_s * wait_s
    if x > 700:  # e^x overflows; the result is 0 to any precision that matters
        return 0.0
    return arrivals_per_s / math.expm1(x)


def delete_calls_per_batch(files: float, queues: int, messages_per_receive: float) -> float:
    """DeleteMessageBatch calls for one batch of ``files`` messages (one file per message).

    After a commit the runner deletes the batch's messages in chunks of 10 per queue: ⌈n/10⌉
    calls for a queue holding n of them. With one queue that is ⌈files/10⌉. With Q queues the
    messages came in receives of m (``messages_per_receive``), each from one queue: g = ⌊files/m⌋
    full receives and one of the r = files − g·m left over (if any); K ~ Binomial(g, 1/Q) of the
    full ones and, with probability 1/Q, the last one are from a given queue, and the expected
    calls are Q × E[⌈(K·m + R·r)/10⌉]."""
    if queues <= 1:
        return float(math.ceil(files / SQS_BATCH - 1e-9))
    m = max(1.0, messages_per_receive)
    groups = int(files / m + 1e-9)
    rest = max(0.0, files - groups * m)
    p = 1.0 / queues

    def calls(k: int, extra: float) -> float:
        return float(math.ceil((k * m + extra) / SQS_BATCH - 1e-9))

    expected = 0.0
    for k in range(0, groups + 1):
        log_pmf = (
            math.lgamma(groups + 1)
            - math.lgamma(k + 1)
            - math.lgamma(groups - k + 1)
            + k * math.log(p)
            + (groups - k) * math.log1p(-p)
        )
        without = calls(k, 0.0)
        with_rest = calls(k, rest) if rest > 1e-9 else without
        expected += math.exp(log_pmf) * ((1 - p) * without + p * with_rest)
    return queues * expected


def batching(w: Workload, fleet: Fleet, measured: bool = False) -> Batching:
    """Files per commit: given (``measured`` from the ledger, or an input), else predicted.

    Each worker batches its own files per table: a batch closes ``ICEFEED_BATCH_MAX_WAIT_S`` after
    its first file, so one worker's batch holds at least r·wait files, r = the table's rate / the
    workers (the wait bound). Commits to one table are serialized fleet-wide and each holds the
    table for a + b·F seconds (a = engine s per commit, b = engine s per file): a table absorbs R
    files/s only if F/(a + b·F) ≥ R, i.e. F ≥ R·a / (1 − R·b) (the lock bound: batches grow while
    they wait for the table). F is the larger bound, at most ``ICEFEED_BATCH_MAX_FILES``."""
    if w.files_per_commit is not None:
        how = "measured" if measured else "input"
        text = "measured: loaded files ÷ commits" if measured else "given"
        return Batching(w.files_per_commit, how, f"{_n(w.files_per_commit)} ({text})")
    table_rate = w.files_per_s / w.tables
    wait = table_rate / fleet.workers * fleet.batch_max_wait_s
    a, b = w.engine_s_per_commit, w.engine_s_per_file
    lock = math.inf if table_rate * b >= 1 else table_rate * a / (1 - table_rate * b)
    files = max(1.0, wait, lock)
    wait_text = (
        f"wait bound {_n(table_rate)} files/s per table ÷ {fleet.workers} worker(s) × {_n(fleet.batch_max_wait_s)} s"
    )
    lock_text = (
        f"lock bound {_n(table_rate)} × {_n(a)} ÷ (1 − {_n(table_rate)} × {_n(b)})"
        if math.isfinite(lock)
        else f"lock bound: none ({_n(table_rate)} files/s × {_n(b)} s per file ≥ 1)"
    )
    if files > fleet.batch_max_files:
        over = table_rate * (a + b * fleet.batch_max_files) > fleet.batch_max_files
        return Batching(
            float(fleet.batch_max_files),
            "overloaded" if over else "max_files",
            f"ICEFEED_BATCH_MAX_FILES {fleet.batch_max_files} (< {wait_text} = {_n(wait)}, {lock_text})",
        )
    bound = "lock" if lock >= wait and lock > 1 else ("wait" if wait > 1 else "one file")
    return Batching(files, bound, f"max(1, {wait_text} = {_n(wait)}, {lock_text} = {_n(lock)})")


def _req(kind: str, item: str, quantity: float, formula: str, prices: Prices) -> Line:
    """A line of requests priced by ``kind``: sqs, get (S3 GET/HEAD), put (S3 PUT/LIST), catalog."""
    component, price, per = {
        "sqs": ("SQS", prices.sqs_usd_per_million, 1e6),
        "get": ("S3 reads", prices.s3_get_usd_per_1000, 1000.0),
        "put": ("S3 writes", prices.s3_put_usd_per_1000, 1000.0),
        "catalog": ("catalog", prices.catalog_usd_per_million, 1e6),
    }[kind]
    return Line(component, item, quantity, "calls" if kind == "catalog" else "requests", price, per, formula)


def _maintenance_lines(fleet: Fleet, w: Workload, commits: float, prices: Prices) -> list[Line]:
    """Table maintenance, amortised: requests counted from worker/maintenance.py and
    worker/adapters/iceberg_maintenance.py (with pyiceberg 0.12), upper bounds, not measured.

    Per table, one run per check interval fleet-wide (the lease). A run loads the table twice
    (state, expire) and expires snapshots in one commit: GetTable ×3 + UpdateTable; 3 metadata.json
    and 1 manifest list read, the L live manifests read twice (listing, planning); 1 metadata.json
    written. L ≤ max(``compact_min_files``, commits per run): small files (one per commit) pile up
    until a run compacts them. A run compacts (at most once) when ``compact_min_files`` small files
    are live: it reads each small data file (2 range GETs: footer and data), the previous compacted
    file and the L manifests twice (pyiceberg's overwrite), and writes a data file, an added and a
    deleted manifest, a manifest list and a metadata.json (GetTable ×3 + UpdateTable). Orphan
    removal once per ``orphan_interval_s``: a table load and its manifests, and one page each of
    listing data/ and metadata/ (a page per 1000 objects)."""
    policy = fleet.maintenance
    if policy is None:
        return []
    m = policy.compact_min_files
    data_files = commits * fleet.output_files
    runs = w.tables * SECONDS_PER_MONTH / policy.check_interval_s
    live = max(m, commits / runs)
    compactions = min(runs, data_files / m)
    orphan_runs = w.tables * SECONDS_PER_MONTH / policy.orphan_interval_s
    run_text = f"{w.tables} table(s) × {_n(SECONDS_PER_MONTH)} s ÷ {policy.check_interval_s} s = {_n(runs)} runs"
    comp_text = f"min({_n(runs)} runs, {_n(data_files)} data files ÷ {m}) = {_n(compactions)} compactions"
    orphan_text = f"{w.tables} table(s) × {_n(SECONDS_PER_MONTH)} s ÷ {policy.orphan_interval_s} s = {_n(orphan_runs)}"
    return [
        _req(
            "get",
            "maintenance: runs",
            runs * (4 + 2 * live),
            f"{run_text} × (4 + 2 × {_n(live)} live manifests) GET",
            prices,
        ),
        _req(
            "get",
            "maintenance: compactions",
            data_files * 2 + compactions * (3 + 2 * live),
            f"{_n(data_files)} data files × 2 + {comp_text} × (3 + 2 × {_n(live)}) GET",
            prices,
        ),
        _req("get", "maintenance: orphan scans", orphan_runs * (1 + live), f"{orphan_text} × (1 + {_n(live)})", prices),
        _req("put", "maintenance: expiry commits", runs, f"{run_text} × 1 PUT (metadata.json)", prices),
        _req("put", "maintenance: compactions", compactions * 5, f"{comp_text} × 5 PUT", prices),
        _req("put", "maintenance: orphan listings", orphan_runs * 2, f"{orphan_text} × 2 LIST", prices),
        _req(
            "catalog",
            "maintenance: catalog calls",
            runs * 4 + compactions * 4 + orphan_runs,
            f"{_n(runs)} runs × 4 + {_n(compactions)} compactions × 4 + {_n(orphan_runs)} orphan runs × 1",
            prices,
        ),
    ]


def _commit_lines(name: str, commits: float, data_files: float, mech: Mechanics, prices: Prices) -> list[Line]:
    """The requests of ``commits`` Iceberg appends of ``data_files`` data files each: the table's
    metadata read, the data files and new metadata written, the catalog calls."""
    c = f"{_n(commits)} {name}"
    return [
        _req(
            "get",
            f"{name}: table metadata reads",
            commits * mech.metadata_reads_per_commit,
            f"{c} × {_n(mech.metadata_reads_per_commit)} GET (metadata.json, manifest list)",
            prices,
        ),
        _req("put", f"{name}: data files", commits * data_files, f"{c} × {_n(data_files)} data file(s)", prices),
        _req(
            "put",
            f"{name}: table metadata writes",
            commits * mech.metadata_writes_per_commit,
            f"{c} × {_n(mech.metadata_writes_per_commit)} PUT (manifest, manifest list, metadata.json)",
            prices,
        ),
        _req(
            "catalog",
            f"{name}: catalog calls",
            commits * mech.catalog_calls_per_commit,
            f"{c} × {_n(mech.catalog_calls_per_commit)} (GetTable to plan, GetTable + UpdateTable to commit)",
            prices,
        ),
    ]


def _reads_of_files(files: float, engine_fraction: float, heads: int, mech: Mechanics, prices: Prices) -> list[Line]:
    """Reading the files: one GET (If-Match) per file the worker reads itself; the engine's own
    requests per file it reads by path, plus ``heads`` HEADs by the worker for each of those
    (icefeed: one before the claim, one after the commit, to see the object did not change)."""
    lines = []
    if engine_fraction < 1:
        worker = files * (1 - engine_fraction)
        lines.append(
            _req("get", "GetObject by the worker", worker, f"{_n(files)} files × {_n(1 - engine_fraction)}", prices)
        )
    if engine_fraction > 0:
        per = mech.engine_reads_per_file + heads
        what = f"{_n(mech.engine_reads_per_file)} by the engine" + (f" + {heads} HEAD by the worker" if heads else "")
        lines.append(
            _req(
                "get",
                "engine reads" + (" + HEAD" if heads else ""),
                files * engine_fraction * per,
                f"{_n(files)} files × {_n(engine_fraction)} × {_n(per)} ({what})",
                prices,
            )
        )
    return lines


def _receives(deliveries: float, w: Workload, fleet: Fleet, prices: Prices) -> list[Line]:
    """Receives that return messages, and the empty long polls of every poller."""
    per_poller = w.files_per_s / fleet.queues / (fleet.workers * fleet.receivers_per_queue)
    empty = fleet.pollers * SECONDS_PER_MONTH * empty_receives_per_s(per_poller, fleet.wait_time_s)
    return [
        _req(
            "sqs",
            "ReceiveMessage",
            deliveries / w.messages_per_receive,
            f"{_n(deliveries)} deliveries ÷ {_n(w.messages_per_receive)} message(s) per receive",
            prices,
        ),
        _req(
            "sqs",
            "ReceiveMessage (empty)",
            empty,
            f"{fleet.pollers} poller(s) × {_n(SECONDS_PER_MONTH)} s × λ/(e^(λW) − 1), "
            f"λ = {_n(per_poller)} messages/s per poller, W = {_n(fleet.wait_time_s)} s",
            prices,
        ),
    ]


def _engine(name: str, commits: float, files: float, w: Workload, prices: Prices) -> Line:
    """Engine busy time: a fixed part per commit and a part per file."""
    seconds = commits * w.engine_s_per_commit + files * w.engine_s_per_file
    return Line(
        "engine",
        f"{name}: engine time",
        seconds / 3600,
        "engine-hours",
        prices.engine_usd_per_hour,
        1,
        f"({_n(commits)} commits × {_n(w.engine_s_per_commit)} s + {_n(files)} files × "
        f"{_n(w.engine_s_per_file)} s) ÷ 3600",
    )


def _always_on(fleet: Fleet, prices: Prices, ledger: bool) -> list[Line]:
    """The worker pods all month, and (icefeed) the ledger's PostgreSQL."""
    hours = fleet.workers * HOURS_PER_MONTH
    lines = [
        Line("workers", "worker pods", hours, "pod-hours", prices.worker_usd_per_hour, 1, f"{fleet.workers} × 730 h")
    ]
    if ledger:
        lines.append(
            Line(
                "PostgreSQL",
                "ledger database",
                1,
                "month",
                prices.pg_usd_per_month,
                1,
                "instance and storage, all month",
            )
        )
    return lines


# -- the three ways -------------------------------------------------------------------------------


def icefeed(w: Workload, fleet: Fleet, mech: Mechanics, prices: Prices, batch: Batching) -> Scenario:
    files = w.files_per_month
    deliveries = files * (1 + w.retry_fraction)  # a retried file is received and read again
    f = batch.files_per_commit
    commits = files / f
    per_batch = delete_calls_per_batch(f, fleet.queues, w.messages_per_receive)
    lines = _receives(deliveries, w, fleet, prices)
    lines += [
        _req(
            "sqs",
            "DeleteMessageBatch",
            commits * per_batch,
            f"{_n(commits)} commits × {_n(per_batch)} ({_n(f)} messages from {fleet.queues} queue(s), 10 a call)",
            prices,
        ),
        _req(
            "sqs",
            "ChangeMessageVisibilityBatch",
            files * w.retry_fraction / SQS_BATCH,
            f"{_n(files)} files × {_n(w.retry_fraction)} retries ÷ 10 (the retry's backoff)",
            prices,
        ),
    ]
    if w.backfill_files_per_month:
        b = w.backfill_files_per_month
        lines += [
            _req("sqs", "backfill: SendMessageBatch", b / SQS_BATCH, f"{_n(b)} objects ÷ 10", prices),
            _req("put", "backfill: ListObjectsV2", math.ceil(b / LIST_PAGE), f"{_n(b)} objects ÷ 1000, up", prices),
        ]
    lines += _reads_of_files(deliveries, w.engine_read_fraction, 2, mech, prices)
    lines += _commit_lines("commits", commits, fleet.output_files, mech, prices)
    lines += _maintenance_lines(fleet, w, commits, prices)
    lines.append(_engine("appends", commits, files, w, prices))
    lines += _always_on(fleet, prices, ledger=True)
    notes = []
    if batch.bound == "overloaded":
        notes.append(
            f"one table cannot absorb {_n(w.files_per_s / w.tables)} files/s even at ICEFEED_BATCH_MAX_FILES "
            f"{fleet.batch_max_files}: spread the stream over more tables"
        )
    return Scenario("icefeed", files, commits, tuple(lines), tuple(notes))


def per_file_loop(w: Workload, fleet: Fleet, mech: Mechanics, prices: Prices) -> Scenario:
    files = w.files_per_month
    deliveries = files * (1 + w.retry_fraction)
    lines = _receives(deliveries, w, fleet, prices)
    lines.append(_req("sqs", "DeleteMessage", files, f"{_n(files)} files × 1", prices))
    lines += _reads_of_files(deliveries, 1.0, 0, mech, prices)
    lines += _commit_lines("per-file commits", files, 1, mech, prices)
    lines.append(_engine("per-file commits", files, files, w, prices))
    lines += _always_on(fleet, prices, ledger=False)
    notes = ["no ledger: a crash between a commit and its delete loads the file twice"]
    hold = w.engine_s_per_commit + w.engine_s_per_file
    per_table = w.files_per_s / w.tables
    if per_table * hold > 1:
        notes.append(
            f"cannot keep up: one table would need {_n(per_table)} commits/s, each holding it {_n(hold)} s "
            f"(at most {_n(1 / hold)} a second)"
        )
    return Scenario("per-file loop", files, files, tuple(lines), tuple(notes))


def polling(w: Workload, fleet: Fleet, mech: Mechanics, prices: Prices) -> Scenario:
    files = w.files_per_month
    polls = w.poll_prefixes * SECONDS_PER_MONTH / w.poll_interval_s
    per_poll = files / polls  # new objects one poll of one prefix finds, on average
    pages = max(1, math.ceil(per_poll / LIST_PAGE - 1e-9))
    commits = polls * -math.expm1(-per_poll)  # 1 − e^(−k): the polls that find a file (Poisson arrivals)
    lines = [
        _req(
            "put",
            "ListObjectsV2",
            polls * pages,
            f"{w.poll_prefixes} prefix(es) × {_n(SECONDS_PER_MONTH)} s ÷ {_n(w.poll_interval_s)} s × {pages} "
            f"page(s) (StartAfter the last key seen: only new keys are listed)",
            prices,
        )
    ]
    lines += _reads_of_files(files, w.engine_read_fraction, 0, mech, prices)
    lines += _commit_lines("poll commits", commits, fleet.output_files, mech, prices)
    lines.append(_engine("poll commits", commits, files, w, prices))
    lines += _always_on(fleet, prices, ledger=False)
    notes = (
        f"{_n(polls)} polls × (1 − e^−{_n(per_poll)}) = {_n(commits)} commits (polls that find files); a file "
        f"waits up to {_n(w.poll_interval_s)} s to be seen; no ledger (a cursor per prefix)",
    )
    return Scenario(f"polling {_n(w.poll_interval_s)} s", files, commits, tuple(lines), notes)


def estimate(w: Workload, fleet: Fleet, mech: Mechanics, prices: Prices, measured_batches: bool = False) -> Estimate:
    """The month of ``w`` priced three ways (see the module docstring)."""
    batch = batching(w, fleet, measured_batches)
    per_commit = w.engine_s_per_commit + w.engine_s_per_file * batch.files_per_commit
    return Estimate(
        w,
        batch,
        per_commit,
        (
            icefeed(w, fleet, mech, prices, batch),
            per_file_loop(w, fleet, mech, prices),
            polling(w, fleet, mech, prices),
        ),
    )


# -- measured engine time -------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineFit:
    """Engine seconds of a commit = ``per_commit_s`` + ``per_file_s`` × files."""

    per_commit_s: float
    per_file_s: float
    how: str


def engine_fit(mean_files: float, mean_s: float, intercept_s: float | None) -> EngineFit:
    """Split the measured engine time of a commit into a fixed part and a part per file.

    ``intercept_s``: the least-squares intercept of seconds over files across the measured
    commits (PostgreSQL's ``regr_intercept``; ``None`` when they all had the same number of
    files). The fixed part is that intercept clamped to [0, mean]; the per-file part is what is
    left of the mean, spread over the mean files, so the fit reproduces the measured total. With
    no usable intercept the whole mean counts as fixed (an upper bound for one-file commits)."""
    if mean_files <= 0 or mean_s < 0:
        raise ConfigError("engine fit needs commits with files and a non-negative time")
    if intercept_s is None or not math.isfinite(intercept_s):
        return EngineFit(mean_s, 0.0, "mean per commit (no fit: the commits all had the same number of files)")
    fixed = min(max(intercept_s, 0.0), mean_s)
    return EngineFit(fixed, (mean_s - fixed) / mean_files, "least squares over the commits, clamped")
