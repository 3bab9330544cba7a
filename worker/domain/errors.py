"""Error taxonomy shared by every layer: what failed, and whether trying again can help."""

from __future__ import annotations


class IcefeedError(Exception):
    """Base of the product's own errors. ``error_class`` is what the ledger records."""

    error_class = "Error"

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        if error_class is not None:
            self.error_class = error_class

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(IcefeedError):
    """Settings or routes are invalid: the worker refuses to start."""

    error_class = "ConfigError"


class TransientError(IcefeedError):
    """Infrastructure hiccup (server unavailable, connection lost, throttled, commit conflict).
    Retrying the same work later can succeed; never the file's fault."""

    error_class = "Transient"


class DataError(IcefeedError):
    """The file itself cannot be loaded (corrupt, unparsable, schema conflict, too large).
    Retrying cannot help: the file is recorded FAILED and its message acked."""

    error_class = "DataError"


class DecodeLimit(DataError):
    """A worker-read file whose text or values exceed what the worker decodes (settings
    ``ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES`` / ``_MAX_VALUES``). The pipeline hands such a file to
    the engine when the engine can read it; otherwise it is FAILED with this error (permanent)."""

    error_class = "DecompressionLimit"


class BatchError(IcefeedError):
    """A write failed for a reason that is neither known-transient nor known-bad-data.
    Batches are bisected to find the culprit; a lone file is retried until the DLQ takes it."""

    error_class = "Unknown"


# Error classes that mean a service the file needs is down or busy (the engine, PostgreSQL, AWS,
# the table's commit lock), not that the file is bad. A file left PENDING by one of these waits
# for the service without spending its message's receives (docs/guarantees.md, "Outages are
# waits"), up to ``ICEFEED_SQS_OUTAGE_MAX_ATTEMPTS`` claims: a file that takes its engine down each
# time it is written cannot hold the queue forever.
OUTAGE_CLASSES: frozenset[str] = frozenset(
    {
        "SparkUnavailable",
        "SparkSessionLost",
        "SparkUnauthenticated",
        "CommitConflict",
        "TableBusy",
        "FenceExpired",
        "AwsUnavailable",
        "PgUnavailable",
        "PgConnectionLost",
        "PgLockTimeout",
    }
)


def is_outage(error_class: str | None) -> bool:
    """True when ``error_class`` names an outage of a service rather than a fault of the file."""
    return error_class in OUTAGE_CLASSES


# Engine error messages that mean "this file's data cannot be loaded as it is".
_DATA_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "SchemaConflict",
        ("in the table but", "cannot be cast", "incompatible type", "cannot safely cast", "ambiguous attribute"),
    ),
    # Apache Spark refuses a JSON or Parquet file with two columns differing only in case (Sail
    # reads both, and the schema policy quarantines the file as a duplicate name).
    ("DuplicateName", ("column_already_exists", "found duplicate column")),
    # The Spark Connect client cannot decode the answer about this file: seen for JSON nested
    # deeper than ~32 levels (protobuf's decode depth limit).
    ("NestingTooDeep", ("maxdepth", "recursion limit", "nested too deep", "exception deserializing response")),
    (
        "ParseError",
        (
            "json error",
            "csv error",
            "parquet error",
            "not valid json",
            "malformed",
            "unexpected end of file",
            "invalid gzip",
            "corrupt deflate",
            "invalid utf-8",
            "invalid utf8",
            "stream did not contain valid utf-8",
            "arrow error",
            "incorrect number of fields",
            "unequal lengths",
            "encountered unequal",
        ),
    ),
)
# The engine refused the path it was given for a file: permanent, whatever else the message says
# (the key itself is in the message and may contain any word). Keys the engines would rewrite are
# refused at admission (domain/keys.py); these catch a rule of an engine not known there.
# Sail: "Encountered object with invalid path: Path "/a//b.csv" contained empty path segment";
# Hadoop ``Path``: "java.net.URISyntaxException: Relative path in absolute URI: …" and
# "Can not create a Path from an empty string".
_INVALID_PATH: tuple[str, ...] = (
    "invalid path",
    "empty path segment",
    "relative path in absolute uri",
    "urisyntaxexception",
    "can not create a path from an empty string",
)
_TRANSIENT_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "CommitConflict",
        ("concurrent metadata", "commit failed", "commitfailedexception", "concurrent update", "cannot commit"),
    ),
    (
        "SparkUnavailable",
        ("unavailable", "connection refused", "failed to connect", "deadline exceeded", "socket closed"),
    ),
    # The session or operation is gone: expired, lost in a server restart, or stopped by a fence
    # (Apache Spark: INVALID_HANDLE.SESSION_CLOSED / OPERATION_CANCELED; Sail: "session … is not
    # running", "operation not found", "job runner is stopped").
    (
        "SparkSessionLost",
        (
            "session_not_found",
            "session_closed",
            "invalid_handle",
            "operation not found",
            "is not running",
            "job runner is stopped",
            "operation_canceled",
        ),
    ),
)


# A gRPC message over the client's or the server's size limit (RESOURCE_EXHAUSTED): the same
# request can never pass. Permanent for this batch: it is split, and a lone file is FAILED.
_MESSAGE_TOO_LARGE = (
    "message larger than max",  # grpc core (the Python client): "Sent message larger than max (n vs. m)"
    "exceeds maximum size",  # grpc-java (Apache Spark): "gRPC message exceeds maximum size m: n"
    "message length too large",  # tonic (Sail): "decoded message length too large"
)


def classify_engine_error(kind: str, message: str, grpc_code: str | None = None) -> IcefeedError:
    """Map an engine failure (exception class name, message, gRPC status) to the taxonomy.

    The one place where Spark Connect errors get their meaning; the ledger stores the result.
    """
    text = f"{kind}: {message}".lower()
    if any(n in text for n in _MESSAGE_TOO_LARGE):
        return DataError(f"Spark Connect message over the size limit: {message}", error_class="MessageTooLarge")
    if grpc_code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"):
        return TransientError(f"Spark Connect {grpc_code.lower()}: {message}", error_class="SparkUnavailable")
    if grpc_code == "UNAUTHENTICATED":
        return TransientError(f"Spark Connect token rejected or expired: {message}", error_class="SparkUnauthenticated")
    if "unauthenticated" in text or "statuscode.permission_denied" in text:
        return TransientError(f"Spark Connect token rejected or expired: {message}", error_class="SparkUnauthenticated")
    if any(n in text for n in _INVALID_PATH):
        return DataError(f"{kind}: {message}", error_class="InvalidPath")
    for error_class, needles in _TRANSIENT_PATTERNS:
        if any(n in text for n in needles):
            return TransientError(f"{kind}: {message}", error_class=error_class)
    for error_class, needles in _DATA_PATTERNS:
        if any(n in text for n in needles):
            return DataError(f"{kind}: {message}", error_class=error_class)
    return BatchError(f"{kind}: {message}", error_class=kind or "Unknown")
