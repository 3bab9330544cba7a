"""Unit tests for the error taxonomy (worker.domain.errors) and the Spark sink's pure helpers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.errors.exceptions.connect import AnalysisException, SparkConnectGrpcException, SparkRuntimeException

from worker.adapters.spark_sink import batch_tag, quote_table, read_path, to_icefeed_error
from worker.domain.errors import (
    BatchError,
    ConfigError,
    DataError,
    IcefeedError,
    TransientError,
    classify_engine_error,
)

PROPERTY = settings(max_examples=200, deadline=None, database=None)

# Messages as Sail (the Spark Connect server used in development) reports them.
SAIL_PARSE = "Json error: Not valid JSON: EOF while parsing a value at line 1 column 6"
SAIL_SCHEMA = (
    "Column 'id' has type Int64 in the table but Utf8 in the input data. Set mergeSchema=true to evolve the schema."
)
SAIL_CONFLICT = (
    "conflict: Cannot commit catalog-managed table 'sales.race' because base metadata location "
    "'s3://wh/sales/race/metadata/00001.metadata.json' is no longer current"
)
ICEBERG_RETRIES = "Iceberg commit failed after 5 retries due to concurrent metadata updates"


# --------------------------------------------------------------------------- taxonomy


def test_error_classes() -> None:
    assert ConfigError("x").error_class == "ConfigError"
    assert TransientError("x").error_class == "Transient"
    assert DataError("x").error_class == "DataError"
    assert BatchError("x").error_class == "Unknown"
    assert IcefeedError("x").error_class == "Error"
    err = DataError("bad file", error_class="ParseError")
    assert err.error_class == "ParseError"
    assert err.message == "bad file" == str(err)
    # the override is per instance, not per class
    assert DataError("y").error_class == "DataError"
    for cls in (ConfigError, TransientError, DataError, BatchError):
        assert issubclass(cls, IcefeedError)


# --------------------------------------------------------------------------- classify_engine_error


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"])
def test_grpc_transient_codes(code: str) -> None:
    err = classify_engine_error("SparkConnectGrpcException", "Column 'x' malformed", code)
    assert isinstance(err, TransientError)
    assert err.error_class == "SparkUnavailable"
    assert code.lower() in str(err)
    assert "Column 'x' malformed" in str(err)


def test_grpc_unauthenticated() -> None:
    err = classify_engine_error("SparkConnectGrpcException", "invalid bearer token", "UNAUTHENTICATED")
    assert isinstance(err, TransientError)
    assert err.error_class == "SparkUnauthenticated"
    assert "token rejected or expired" in str(err)
    assert "invalid bearer token" in str(err)


def test_other_grpc_code_falls_back_to_the_message() -> None:
    err = classify_engine_error("SparkConnectGrpcException", SAIL_PARSE, "INTERNAL")
    assert isinstance(err, DataError)
    assert err.error_class == "ParseError"


def test_sail_parse_error() -> None:
    err = classify_engine_error("SparkRuntimeException", SAIL_PARSE)
    assert isinstance(err, DataError)
    assert err.error_class == "ParseError"
    assert str(err) == f"SparkRuntimeException: {SAIL_PARSE}"


def test_sail_schema_conflict() -> None:
    err = classify_engine_error("AnalysisException", SAIL_SCHEMA)
    assert isinstance(err, DataError)
    assert err.error_class == "SchemaConflict"


@pytest.mark.parametrize("message", [SAIL_CONFLICT, ICEBERG_RETRIES])
def test_commit_conflicts_are_transient(message: str) -> None:
    err = classify_engine_error("SparkRuntimeException", message)
    assert isinstance(err, TransientError)
    assert err.error_class == "CommitConflict"


@pytest.mark.parametrize(
    ("kind", "message", "cls", "error_class"),
    [
        ("SparkConnectGrpcException", "failed to connect to all addresses", TransientError, "SparkUnavailable"),
        ("SparkConnectGrpcException", "Connection refused (os error 111)", TransientError, "SparkUnavailable"),
        ("SparkConnectGrpcException", "Socket closed", TransientError, "SparkUnavailable"),
        ("SparkConnectGrpcException", "[INVALID_HANDLE.SESSION_NOT_FOUND] x", TransientError, "SparkSessionLost"),
        ("SparkConnectGrpcException", "[INVALID_HANDLE.SESSION_CLOSED] x", TransientError, "SparkSessionLost"),
        ("CommitFailedException", "Requirement failed: branch main changed", TransientError, "CommitConflict"),
        ("SparkRuntimeException", "CSV error: incorrect number of fields", DataError, "ParseError"),
        ("SparkRuntimeException", "Parquet error: invalid footer", DataError, "ParseError"),
        ("SparkRuntimeException", "stream did not contain valid UTF-8", DataError, "ParseError"),
        ("SparkRuntimeException", "invalid gzip header", DataError, "ParseError"),
        ("AnalysisException", "value 'x' cannot be cast to INT", DataError, "SchemaConflict"),
        ("AnalysisException", "Cannot safely cast 'a': string to int", DataError, "SchemaConflict"),
    ],
)
def test_message_patterns(kind: str, message: str, cls: type[IcefeedError], error_class: str) -> None:
    err = classify_engine_error(kind, message)
    assert type(err) is cls
    assert err.error_class == error_class


def test_unknown_message_is_a_batch_error() -> None:
    err = classify_engine_error("IllegalStateException", "something odd happened")
    assert type(err) is BatchError
    assert err.error_class == "IllegalStateException"
    assert str(err) == "IllegalStateException: something odd happened"


def test_unknown_message_without_kind() -> None:
    err = classify_engine_error("", "something odd happened")
    assert type(err) is BatchError
    assert err.error_class == "Unknown"


def test_kind_is_part_of_the_match() -> None:
    assert isinstance(classify_engine_error("CommitFailedException", "no details"), TransientError)


@PROPERTY
@given(kind=st.text(max_size=20), message=st.text(max_size=80), code=st.none() | st.sampled_from(["INTERNAL", "X"]))
def test_classification_is_total(kind: str, message: str, code: str | None) -> None:
    err = classify_engine_error(kind, message, code)
    assert isinstance(err, TransientError | DataError | BatchError)
    assert message in str(err)


# --------------------------------------------------------------------------- to_icefeed_error


class FakeGrpcError(Exception):
    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self._status = status

    def getGrpcStatusCode(self) -> Any:
        return self._status


class FakeRpcError(Exception):
    """Like grpc.RpcError: ``code()`` returns a grpc.StatusCode."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class BrokenStatus(Exception):
    def getGrpcStatusCode(self) -> Any:
        raise RuntimeError("no status")


class WithGetMessage(Exception):
    def getMessage(self) -> str:
        return "  Json error: from getMessage  "


def test_plain_runtime_error() -> None:
    err = to_icefeed_error(RuntimeError("something odd"))
    assert type(err) is BatchError
    assert err.error_class == "RuntimeError"
    assert str(err) == "RuntimeError: something odd"


def test_icefeed_error_passes_through() -> None:
    original = DataError("x", error_class="TooLarge")
    assert to_icefeed_error(original) is original


@pytest.mark.parametrize("status", [grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"])
def test_grpc_status_code_is_used(status: Any) -> None:
    err = to_icefeed_error(FakeGrpcError("whatever happened", status))
    assert isinstance(err, TransientError)
    assert err.error_class == "SparkUnavailable"


def test_grpc_unauthenticated_status() -> None:
    err = to_icefeed_error(FakeGrpcError("bad token", grpc.StatusCode.UNAUTHENTICATED))
    assert err.error_class == "SparkUnauthenticated"
    assert "token rejected or expired" in str(err)


def test_grpc_status_none_falls_back_to_message() -> None:
    err = to_icefeed_error(FakeGrpcError(SAIL_PARSE, None))
    assert isinstance(err, DataError)
    assert err.error_class == "ParseError"


def test_rpc_error_code_method() -> None:
    err = to_icefeed_error(FakeRpcError("boom"))
    assert err.error_class == "SparkUnavailable"


def test_status_lookup_failure_still_classifies() -> None:
    err = to_icefeed_error(BrokenStatus(SAIL_CONFLICT))
    assert isinstance(err, TransientError)
    assert err.error_class == "CommitConflict"


def test_get_message_is_preferred_and_stripped() -> None:
    err = to_icefeed_error(WithGetMessage("ignored"))
    assert isinstance(err, DataError)
    assert str(err) == "WithGetMessage: Json error: from getMessage"


def test_message_is_truncated() -> None:
    err = to_icefeed_error(RuntimeError("x" * 5000))
    assert str(err) == "RuntimeError: " + "x" * 2000


def test_real_pyspark_exceptions() -> None:
    schema = to_icefeed_error(AnalysisException(message=SAIL_SCHEMA))
    assert (type(schema), schema.error_class) == (DataError, "SchemaConflict")
    assert str(schema).startswith("AnalysisException: ")
    parse = to_icefeed_error(SparkRuntimeException(message=SAIL_PARSE))
    assert (type(parse), parse.error_class) == (DataError, "ParseError")
    down = to_icefeed_error(SparkConnectGrpcException(message="failed to connect to all addresses"))
    assert (type(down), down.error_class) == (TransientError, "SparkUnavailable")


# --------------------------------------------------------------------------- read_path, quote_table


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("in/plain.json", "s3://b/in/plain.json"),
        ("in/what?.json", "s3://b/in/what%3F.json"),
        ("in/[a].json", "s3://b/in/%5Ba%5D.json"),
        ("in/{a,b}.json", "s3://b/in/%7Ba%2Cb%7D.json"),
        ("in/*.json", "s3://b/in/%2A.json"),
        ("in/100%.json", "s3://b/in/100%25.json"),
        ("in/%2F.json", "s3://b/in/%252F.json"),
        ("in/a b.json", "s3://b/in/a%20b.json"),
        ("in/a+b.json", "s3://b/in/a%2Bb.json"),
        ("in/café €.json", "s3://b/in/caf%C3%A9%20%E2%82%AC.json"),
        ("in//double/slash.json", "s3://b/in//double/slash.json"),
        ("a/b/c/d.json", "s3://b/a/b/c/d.json"),
    ],
)
def test_read_path(key: str, expected: str) -> None:
    assert read_path("b", key) == expected


@PROPERTY
@given(st.text(min_size=1, max_size=40))
def test_read_path_round_trips_and_has_no_glob_characters(key: str) -> None:
    from urllib.parse import unquote

    path = read_path("bucket", key)
    assert path.startswith("s3://bucket/")
    encoded = path.removeprefix("s3://bucket/")
    assert unquote(encoded) == key
    assert encoded.count("/") == key.count("/")
    for ch in "?[]{}* \n\t":
        assert ch not in encoded


def test_quote_table() -> None:
    assert quote_table("glue.sales.orders") == "`glue`.`sales`.`orders`"
    assert quote_table("_a.B_2.c") == "`_a`.`B_2`.`c`"


@pytest.mark.parametrize(
    "table",
    [
        "sales.orders",
        "glue.sales.orders.x",
        "glue.sales.or ders",
        "glue.sales.orders'",
        "glue.sales.`orders`",
        "glue.sales.orders;drop table x",
        "glue..orders",
        "",
        "glue.1sales.orders",
    ],
)
def test_quote_table_rejects_bad_names(table: str) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        quote_table(table)


def test_batch_tag() -> None:
    batch_id = UUID("12345678-1234-5678-1234-567812345678")
    assert batch_tag(batch_id) == "icefeed-batch-12345678-1234-5678-1234-567812345678"


def test_an_undecodable_answer_about_one_file_is_that_files_fault() -> None:
    error = classify_engine_error(
        "SparkConnectGrpcException",
        '<_InactiveRpcError of RPC that terminated with: status = StatusCode.INTERNAL details = "Exception '
        'deserializing response!">',
    )
    assert isinstance(error, DataError) and error.error_class == "NestingTooDeep"
    ambiguous = classify_engine_error("AnalysisException", 'ambiguous attribute: ObjectName([Identifier("a")])')
    assert isinstance(ambiguous, DataError) and ambiguous.error_class == "SchemaConflict"


def test_a_rejected_token_reported_only_in_the_message_is_recognised() -> None:
    error = classify_engine_error(
        "SparkConnectGrpcException",
        '<_InactiveRpcError of RPC that terminated with: status = StatusCode.UNAUTHENTICATED details = "Invalid">',
    )
    assert isinstance(error, TransientError) and error.error_class == "SparkUnauthenticated"
    assert "token rejected or expired" in str(error)


def test_balanced_union_keeps_every_frame_in_order_with_a_shallow_tree() -> None:
    from worker.adapters.spark_sink import balanced_union

    class Frame:
        def __init__(self, leaves: list[int], depth: int = 0) -> None:
            self.leaves, self.depth = leaves, depth

        def unionByName(self, other: Frame) -> Frame:  # the pyspark name
            return Frame(self.leaves + other.leaves, max(self.depth, other.depth) + 1)

    for n in (1, 2, 3, 7, 500, 1000):
        union = balanced_union([Frame([i]) for i in range(n)])
        assert union.leaves == list(range(n))
        assert union.depth <= max(0, (n - 1).bit_length())


# A request over the gRPC message limit can never pass: permanent, never retried as transient.
@pytest.mark.parametrize(
    ("message", "code"),
    [
        (
            "<_MultiThreadedRendezvous of RPC that terminated with:\n\tstatus = StatusCode.RESOURCE_EXHAUSTED\n"
            '\tdetails = "CLIENT: Sent message larger than max (360000886 vs. 134217728)"',
            None,  # how pyspark raises it: the status only in the text
        ),
        ("CLIENT: Sent message larger than max (360000886 vs. 134217728)", "RESOURCE_EXHAUSTED"),
        ("gRPC message exceeds maximum size 134217728: 200000000", "RESOURCE_EXHAUSTED"),  # Apache Spark
        ("decoded message length too large: found 200000000 bytes, the limit is: 134217728", None),  # Sail
    ],
)
def test_message_over_the_grpc_limit_is_permanent(message: str, code: str | None) -> None:
    err = classify_engine_error("SparkConnectGrpcException", message, code)
    assert isinstance(err, DataError) and not isinstance(err, TransientError)
    assert err.error_class == "MessageTooLarge"


def test_other_resource_exhaustion_stays_transient() -> None:
    err = classify_engine_error("SparkConnectGrpcException", "too many concurrent operations", "RESOURCE_EXHAUSTED")
    assert isinstance(err, TransientError)


# --------------------------------------------------------------------------- the order of the rules
# An engine message often quotes the object's key or a value, which may contain any word: the
# rules are tried in a fixed order, and the first that matches decides.


@pytest.mark.parametrize(
    ("message", "error_class"),
    [
        ("failed to connect to all addresses while reading s3://landing/in/malformed.json", "SparkUnavailable"),
        (
            "Iceberg commit failed after 5 retries due to concurrent metadata updates (csv error in log)",
            "CommitConflict",
        ),
        ("[INVALID_HANDLE.SESSION_CLOSED] reading s3://landing/not valid json/x.json", "SparkSessionLost"),
    ],
)
def test_a_transient_failure_wins_over_data_words_in_the_same_message(message: str, error_class: str) -> None:
    """An outage while reading a file named like a data error is still an outage: retried, never
    FAILED."""
    err = classify_engine_error("SparkConnectGrpcException", message)
    assert type(err) is TransientError and err.error_class == error_class


def test_an_invalid_path_wins_over_transient_words_in_the_key() -> None:
    message = 'Encountered object with invalid path: Path "/in//connection refused.csv" contained empty path segment'
    err = classify_engine_error("SparkRuntimeException", message)
    assert type(err) is DataError and err.error_class == "InvalidPath"


def test_the_size_limit_wins_over_everything_and_the_grpc_code_over_the_message() -> None:
    too_large = classify_engine_error("X", "Sent message larger than max (5 vs. 4): invalid path", "RESOURCE_EXHAUSTED")
    assert type(too_large) is DataError and too_large.error_class == "MessageTooLarge"
    unavailable = classify_engine_error("X", "CSV error: incorrect number of fields", "UNAVAILABLE")
    assert type(unavailable) is TransientError and unavailable.error_class == "SparkUnavailable"


def test_data_rules_are_tried_in_their_order() -> None:
    """A schema conflict reported about a file that is also unparsable is a schema conflict."""
    err = classify_engine_error("AnalysisException", "value cannot be cast to INT (json error at line 3)")
    assert type(err) is DataError and err.error_class == "SchemaConflict"


def test_each_rule_keeps_the_engine_message_in_its_error() -> None:
    too_large = classify_engine_error("X", "Sent message larger than max (5 vs. 4)")
    assert str(too_large) == "Spark Connect message over the size limit: Sent message larger than max (5 vs. 4)"
    path = classify_engine_error("SparkRuntimeException", "invalid path: a//b")
    assert str(path) == "SparkRuntimeException: invalid path: a//b"
    lost = classify_engine_error("SparkConnectGrpcException", "[INVALID_HANDLE.SESSION_CLOSED] gone")
    assert str(lost) == "SparkConnectGrpcException: [INVALID_HANDLE.SESSION_CLOSED] gone"
    denied = classify_engine_error("X", "<_InactiveRpcError status = StatusCode.PERMISSION_DENIED details = x>")
    assert type(denied) is TransientError and denied.error_class == "SparkUnauthenticated"
