"""One Spark Connect session per write: the session URL, the settings that guard it, and how the
engine's answers about closed sessions are read."""

from __future__ import annotations

import uuid

import pytest
from pyspark.errors.exceptions.connect import SparkConnectGrpcException
from pyspark.sql.connect.client.core import DefaultChannelBuilder

from worker.adapters.spark_sink import SparkSink, session_closed, session_url, to_icefeed_error
from worker.domain.errors import ConfigError, TransientError, classify_engine_error
from worker.settings import DETACHED_LIMIT_S, SparkSettings, load_settings, spark_url_params

SID = str(uuid.uuid4())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sc://spark:15002", f"sc://spark:15002/;session_id={SID}"),
        ("sc://spark:15002/", f"sc://spark:15002/;session_id={SID}"),
        ("sc://spark", f"sc://spark/;session_id={SID}"),
        ("sc://spark:443/;token=t0k;use_ssl=true", f"sc://spark:443/;token=t0k;use_ssl=true;session_id={SID}"),
        ("sc://spark:443/;token=t0k;", f"sc://spark:443/;token=t0k;session_id={SID}"),
    ],
)
def test_the_session_url_names_the_session_and_keeps_every_other_parameter(url: str, expected: str) -> None:
    built = session_url(url, SID)
    assert built == expected
    builder = DefaultChannelBuilder(built)  # the client icefeed pins reads it back
    configured = DefaultChannelBuilder(url.rstrip(";"))  # (the client itself refuses a trailing ";")
    assert builder.session_id == SID
    assert (builder.endpoint, builder.token, builder.secure) == (
        configured.endpoint,
        configured.token,
        configured.secure,
    )


def test_a_session_url_needs_a_uuid_and_a_url_without_a_session() -> None:
    with pytest.raises(ValueError):
        session_url("sc://spark:15002", "not-a-uuid")
    with pytest.raises(ValueError):
        session_url(f"sc://spark:15002/;session_id={SID}", str(uuid.uuid4()))


def test_url_parameters_are_read_as_the_client_reads_them() -> None:
    assert spark_url_params("sc://h:1/;token=a%3Db;user_id=etl") == {"token": "a=b", "user_id": "etl"}
    assert spark_url_params("sc://h:1") == {}


def test_a_configured_url_that_names_a_session_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEFEED_SPARK_URL", f"sc://spark:15002/;token=s3cr3t;session_id={SID}")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "ICEFEED_SPARK_URL" in str(info.value) and "session_id" in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(("dialect", "limit"), [("spark", 3900), ("sail", 3600)])
def test_the_detached_limit_defaults_per_dialect(monkeypatch: pytest.MonkeyPatch, dialect: str, limit: int) -> None:
    monkeypatch.setenv("ICEFEED_SPARK_DIALECT", dialect)
    assert load_settings().spark.detached_limit_s == limit == DETACHED_LIMIT_S[dialect]
    monkeypatch.setenv("ICEFEED_SPARK_DETACHED_LIMIT_S", "0")  # 0: the dialect's default
    assert load_settings().spark.detached_limit_s == limit


def test_the_detached_limit_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEFEED_SPARK_DETACHED_LIMIT_S", "1200")
    assert load_settings().spark.detached_limit_s == 1200
    monkeypatch.setenv("ICEFEED_SPARK_DETACHED_LIMIT_S", "-5")
    with pytest.raises(ConfigError, match="ICEFEED_SPARK_DETACHED_LIMIT_S"):
        load_settings()


# What the engines answered in the measurements (docs/engines.md) when a write's session had been
# stopped by another client.
SPARK_CLOSED = (
    "(org.apache.spark.SparkSQLException) [INVALID_HANDLE.SESSION_CLOSED] The handle "
    f"{SID} is invalid. Session was closed. SQLSTATE: HY000"
)
SAIL_NOT_RUNNING = f"invalid argument: session {SID} is not running"
SAIL_OPERATION = f"invalid argument: operation not found: {uuid.uuid4()}"
SAIL_RUNNER = "job runner is stopped"
SPARK_CANCELED = "[OPERATION_CANCELED] Operation has been canceled. SQLSTATE: HY008"


@pytest.mark.parametrize("message", [SPARK_CLOSED, SAIL_NOT_RUNNING, SAIL_OPERATION, SAIL_RUNNER, SPARK_CANCELED])
def test_a_stopped_session_is_a_lost_session(message: str) -> None:
    error = classify_engine_error("SparkRuntimeException", message)
    assert isinstance(error, TransientError) and error.error_class == "SparkSessionLost"
    assert to_icefeed_error(SparkConnectGrpcException(message)).error_class == "SparkSessionLost"


def test_only_a_refusal_of_the_session_confirms_a_stop() -> None:
    assert session_closed(SparkConnectGrpcException(SPARK_CLOSED))
    assert session_closed(SparkConnectGrpcException(SAIL_NOT_RUNNING))
    assert not session_closed(SparkConnectGrpcException(SAIL_OPERATION))  # an operation, not the session
    assert not session_closed(SparkConnectGrpcException("failed to connect to all addresses; connection refused"))


# --------------------------------------------------------------------------- stop() on a fake engine


class FakeClient:
    """A Spark Connect client whose calls answer from a script: a value, or an exception raised."""

    def __init__(self, answers: dict[str, list[object]]) -> None:
        self.answers = {name: list(script) for name, script in answers.items()}  # a parameter is shared by reruns
        self.calls: list[str] = []
        self._channel = self

    def _answer(self, name: str) -> object:
        self.calls.append(name)
        answer = self.answers[name].pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def interrupt_all(self) -> object:
        return self._answer("interrupt_all")

    def release_session(self) -> object:
        return self._answer("release_session")

    def close(self) -> None:
        self.calls.append("close")


def fake_sink(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> SparkSink:
    sink = SparkSink(SparkSettings())
    monkeypatch.setattr(sink, "_connect", lambda session_id="": type("S", (), {"client": client})())
    return sink


CLOSED = SparkConnectGrpcException(SPARK_CLOSED)
RACE = SparkConnectGrpcException(
    "(java.lang.IllegalStateException) operationId: x with status ReadyForExecution is not within statuses "
    "List(Finished, Failed, Canceled) for event Closed"
)


@pytest.mark.parametrize(
    ("answers", "confirmed", "calls"),
    [
        pytest.param(  # interrupt, release, and the id is refused afterwards
            {"interrupt_all": [["op-1"], CLOSED], "release_session": [None]},
            True,
            ["interrupt_all", "release_session", "interrupt_all", "close"],
            id="released-then-refused",
        ),
        pytest.param(  # Apache Spark 4.0: the release fails racing the interrupt, yet closes the session
            {"interrupt_all": [["op-1"], CLOSED], "release_session": [RACE]},
            True,
            ["interrupt_all", "release_session", "interrupt_all", "close"],
            id="release-error-but-refused",
        ),
        pytest.param(  # stopped before: nothing to do
            {"interrupt_all": [CLOSED], "release_session": []},
            True,
            ["interrupt_all", "close"],
            id="already-stopped",
        ),
        pytest.param(  # the engine takes the released id again: not a fence
            {"interrupt_all": [[], []], "release_session": [None, None]},
            False,
            ["interrupt_all", "release_session", "interrupt_all", "release_session", "close"],
            id="id-accepted-again",
        ),
        pytest.param(
            {"interrupt_all": [SparkConnectGrpcException("failed to connect to all addresses")]},
            False,
            ["interrupt_all", "close"],
            id="unreachable",
        ),
        pytest.param(  # the confirmation itself cannot reach the engine
            {"interrupt_all": [["op-1"], SparkConnectGrpcException("UNAVAILABLE")], "release_session": [None]},
            False,
            ["interrupt_all", "release_session", "interrupt_all", "close"],
            id="confirmation-unreachable",
        ),
    ],
)
async def test_stop_is_confirmed_only_by_the_engine_refusing_the_session(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[object]], confirmed: bool, calls: list[str]
) -> None:
    client = FakeClient(answers)
    assert await fake_sink(monkeypatch, client).stop(SID) is confirmed
    assert client.calls == calls  # the channel is closed whatever happened


class CountingSession:
    """A shared session as the sink sees it: ``conf.set`` works; ``stop`` is counted."""

    def __init__(self, made: list[CountingSession]) -> None:
        made.append(self)
        self.stopped = False
        self.conf = type("Conf", (), {"set": lambda *_: None})()

    def stop(self) -> None:
        self.stopped = True


def test_an_idle_engine_session_is_closed_and_the_next_call_opens_another(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[CountingSession] = []
    reconnects: list[int] = []
    sink = SparkSink(SparkSettings(), on_reconnect=lambda: reconnects.append(1))
    monkeypatch.setattr(sink, "_connect", lambda session_id="": CountingSession(made))
    first = sink._spark()
    used = sink._last_used
    assert not sink.close_idle(600, now=used + 599)  # not idle long enough
    with sink._using():  # a call under way: never closed under it, however old the last use
        assert not sink.close_idle(600, now=used + 10_000)
    sink._writes["w"] = object()  # a write session open: its engine is not idle
    assert not sink.close_idle(600, now=sink._last_used + 10_000)
    del sink._writes["w"]
    assert sink.close_idle(600, now=sink._last_used + 601)
    assert first.stopped and sink._session is None
    assert not sink.close_idle(600, now=sink._last_used + 10_000)  # nothing left to close
    second = sink._spark()
    assert second is not first and len(made) == 2
    assert reconnects == []  # reopening after an idle close is not a reconnect


async def test_the_engine_router_closes_only_idle_engines() -> None:
    from worker.engines import EngineRouter

    class Idle:
        def __init__(self, idle: bool) -> None:
            self.idle, self.asked = idle, 0.0

        def close_idle(self, idle_s: float) -> bool:
            self.asked = idle_s
            return self.idle

    a, b = Idle(True), Idle(False)
    router = EngineRouter({"a": a, "b": b}, lambda t: "a")  # type: ignore[dict-item]
    assert await router.close_idle(300) == ["a"]
    assert a.asked == b.asked == 300
