"""Many engines per fleet: the routes' [[engine]] blocks, the circuit breaker, the router that
isolates one engine's outage from the other engines' routes, and token rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from worker.adapters.spark_sink import SparkSink
from worker.domain.circuit import CLOSED, HALF_OPEN, OPEN, Breaker
from worker.domain.errors import ConfigError, DataError, TransientError
from worker.engines import EngineRouter, engine_settings, token_source
from worker.ports import WriteRequest
from worker.routes import parse_routes
from worker.settings import SparkSettings

ROUTES = """
[[engine]]
name = "team_a"
url = "sc://spark-a.example.com:15002/;use_ssl=true"
token_file = "/var/run/secrets/team-a/token"
user_id = "icefeed"
headers = {{ x-route = "team-a" }}
max_batches_in_flight = 3

[[engine]]
name = "team_b"
url = "sc://spark-b.example.com:15002"
token_env = "TEAM_B_TOKEN"

[[ingestion]]
name = "a"
bucket = "landing"
prefix = "a/"
format = "json"
table = "glue.db.a"
location = "s3://wh/db/a"
engine = "team_a"

[[ingestion]]
name = "b"
bucket = "landing"
prefix = "b/"
format = "json"
table = "glue.db.b"
location = "s3://wh/db/b"
engine = "team_b"

[[ingestion]]
name = "c"
bucket = "landing"
prefix = "c/"
format = "json"
table = "glue.db.c"
location = "s3://wh/db/c"
{extra}
"""


def routes(extra: str = "", **replace: str) -> Any:
    text = ROUTES.format(extra=extra)
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_routes(text)


def test_routes_name_their_engine_and_the_rest_use_the_default() -> None:
    r = routes()
    assert [e.name for e in r.engine] == ["team_a", "team_b"]
    assert (r.engine_of("glue.db.a"), r.engine_of("glue.db.b"), r.engine_of("glue.db.c")) == (
        "team_a",
        "team_b",
        "default",
    )
    assert r.engine[0].token_file == Path("/var/run/secrets/team-a/token") and r.engine[1].token_env == "TEAM_B_TOKEN"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({'engine = "team_b"': 'engine = "team_x"'}, "ingestion 'b': engine 'team_x' is not defined"),
        ({'name = "team_b"': 'name = "team_a"'}, "duplicate engine names: team_a"),
        ({'name = "team_b"': 'name = "default"'}, "'default' is the engine of ICEFEED_SPARK_URL"),
        (
            {'token_env = "TEAM_B_TOKEN"': 'token_env = "TEAM_B_TOKEN"\ntoken_file = "/t"'},
            "token_file or in token_env, not both",
        ),
        ({'"sc://spark-b.example.com:15002"': '"sc://spark-b.example.com:15002/;token=abc"'}, "must not set 'token'"),
        ({'"sc://spark-b.example.com:15002"': '"http://spark-b:15002"'}, "must be a Spark Connect URL"),
        ({'token_env = "TEAM_B_TOKEN"': 'token_env = "team-b token"'}, "must be an environment variable name"),
        ({"x-route": "Authorization"}, "not a header icefeed may send"),
    ],
)
def test_bad_engine_blocks_name_the_field(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        routes(**change)
    assert message in str(caught.value)


def test_one_table_is_written_by_one_engine() -> None:
    extra = '\n[[ingestion]]\nname = "c2"\nbucket = "landing"\nprefix = "c2/"\nformat = "json"\n'
    extra += 'table = "glue.db.a"\nlocation = "s3://wh/db/a"\nengine = "team_b"\n'
    with pytest.raises(ConfigError) as caught:
        routes(extra)
    assert "table glue.db.a is written by two engines: team_a and team_b" in str(caught.value)


def test_an_engines_settings_carry_its_url_user_headers_and_bound() -> None:
    base = SparkSettings(url="sc://default:15002/;token=t0", dialect="sail", concurrency=2)
    a = engine_settings(base, routes().engine[0])
    assert a.url.get_secret_value() == "sc://spark-a.example.com:15002/;use_ssl=true;user_id=icefeed;x-route=team-a"
    assert (a.concurrency, a.dialect, a.detached_limit_s) == (3, "sail", base.detached_limit_s)


def test_an_engine_of_another_dialect_gets_that_dialects_reading_and_the_longer_detached_limit() -> None:
    r = routes(**{'token_env = "TEAM_B_TOKEN"': 'token_env = "TEAM_B_TOKEN"\ndialect = "spark"'})
    base = SparkSettings(url="sc://default:15002", dialect="sail", detached_limit_s=600)
    b = engine_settings(base, r.engine[1])
    assert (b.dialect, b.detached_limit_s) == ("spark", 3900)  # Apache Spark's measured default
    a = engine_settings(base, r.engine[0])  # no dialect of its own: the fleet's
    assert (a.dialect, a.detached_limit_s) == ("sail", 600)
    assert r.dialect_of("glue.db.b", "sail") == "spark" and r.dialect_of("glue.db.a", "sail") == "sail"
    assert r.dialect_of("glue.db.unknown", "sail") == "sail" and r.dialects("sail") == {"sail", "spark"}
    # Sail writes Iceberg only: a Sail engine in a fleet of Parquet tables is refused at start.
    parquet = SparkSettings(url="sc://default:15002", dialect="spark", table_format="parquet")
    sail = routes(**{'token_env = "TEAM_B_TOKEN"': 'token_env = "TEAM_B_TOKEN"\ndialect = "sail"'}).engine[1]
    with pytest.raises(ConfigError, match="cannot write ICEFEED_SPARK_TABLE_FORMAT=parquet"):
        engine_settings(parquet, sail)


# -- tokens ---------------------------------------------------------------------------------------


def test_a_token_file_is_read_again_after_it_is_rotated(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    read = token_source(path, None)
    assert read is not None and read() == "first"
    path.write_text("second")  # the kubelet swaps the mounted secret
    assert read() == "second"
    path.unlink()
    with pytest.raises(TransientError) as caught:
        read()
    assert caught.value.error_class == "SparkUnauthenticated" and "cannot read it" in str(caught.value)


def test_a_token_variable_and_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_B_TOKEN", "from-env")
    read = token_source(None, "TEAM_B_TOKEN")
    assert read is not None and read() == "from-env"
    assert token_source(None, None) is None


def test_each_session_url_carries_the_token_read_now_and_the_redactor_learns_it() -> None:
    tokens = iter(["t-1", "t-2"])
    learned: list[str] = []
    sink = SparkSink(
        SparkSettings(url="sc://spark-a:15002/;use_ssl=true"), token=lambda: next(tokens), on_secret=learned.append
    )
    assert sink._url() == "sc://spark-a:15002/;use_ssl=true;token=t-1"
    assert sink._url() == "sc://spark-a:15002/;use_ssl=true;token=t-2"
    assert learned == ["t-1", "t-2"]


async def test_a_rejected_token_is_retried_once_with_a_fresh_session() -> None:
    sink = SparkSink(SparkSettings(url="sc://spark-a:15002"), token=lambda: "t")
    forgotten: list[int] = []
    sink._forget_session = lambda: forgotten.append(1)  # type: ignore[method-assign]
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise TransientError("Spark Connect token rejected or expired: expired", error_class="SparkUnauthenticated")
        return "ok"

    assert await sink._call(call) == "ok" and (len(calls), forgotten) == (2, [1])

    def always() -> str:
        raise TransientError("token rejected or expired", error_class="SparkUnauthenticated")

    with pytest.raises(TransientError) as caught:
        await sink._call(always)
    assert caught.value.error_class == "SparkUnauthenticated"
    no_token = SparkSink(SparkSettings(url="sc://spark-a:15002/;token=inline"))
    no_token._forget_session = lambda: forgotten.append(2)  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        await no_token._call(always)  # a token in the URL cannot change: no retry
    assert forgotten == [1, 1]


# -- the breaker ----------------------------------------------------------------------------------


def test_the_breaker_opens_after_failures_probes_half_open_and_closes() -> None:
    b = Breaker(failures_to_open=2, cooldown_s=10, max_cooldown_s=25)
    assert b.allow(0) and not b.failed(0, "down") and b.state == CLOSED
    assert b.failed(1, "down") and b.state == OPEN and b.failing_since == 0
    assert not b.allow(5) and b.retry_in(5) == 6
    assert b.allow(11) and b.state == HALF_OPEN
    assert not b.allow(11.5)  # one probe at a time
    assert b.failed(12, "still down") and b.state == OPEN and b.retry_in(12) == 20  # twice as long
    assert b.allow(32) and b.failed(32, "down") and b.retry_in(32) == 25  # capped
    assert b.allow(57) and b.succeeded() and b.state == CLOSED and b.failing_since is None
    assert not b.succeeded()  # already closed: nothing changed


def test_retry_in_is_zero_unless_open_and_a_success_forgets_the_last_error() -> None:
    b = Breaker(failures_to_open=1, cooldown_s=10, max_cooldown_s=25)
    assert b.retry_in(0) == 0  # closed
    assert b.failed(0, "down") and b.retry_in(4) == 6 and b.last_error == "down"
    assert b.retry_in(10) == 0 and b.retry_in(30) == 0  # the cooldown is over: never negative
    assert b.allow(10) and b.state == HALF_OPEN and b.retry_in(40) == 0  # half-open: a probe is out
    b.released()  # that probe said nothing about the engine: another may go
    assert b.allow(10.5) and b.succeeded() and (b.last_error, b.failures, b.opened_at) == ("", 0, None)


# -- the router -----------------------------------------------------------------------------------


class FakeSink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []
        self.down = False
        self.data_error = False

    async def _do(self, what: str) -> Any:
        self.calls.append(what)
        if self.down:
            raise TransientError(f"{self.name} unavailable", error_class="SparkUnavailable")
        if self.data_error:
            raise DataError("bad file", error_class="CorruptFile")
        return {"n": 1}

    async def ping(self) -> str:
        await self._do("ping")
        return f"{self.name}-4.0"

    async def open_session(self, session_id: str, table: str) -> None:
        await self._do(f"open {table}")

    async def stop(self, session_id: str, table: str) -> bool:
        self.calls.append(f"stop {table}")
        return not self.down

    async def infer(self, request: WriteRequest) -> Any:
        return await self._do(f"infer {request.table}")

    async def append(self, request: WriteRequest, plan: Any) -> dict[str, int]:
        result: dict[str, int] = await self._do(f"append {request.table}")
        return result

    async def batch_counts(self, table: str, batch_id: Any) -> dict[str, int]:
        result: dict[str, int] = await self._do(f"counts {table}")
        return result


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def router() -> tuple[EngineRouter, FakeSink, FakeSink, Clock]:
    a, b, clock = FakeSink("a"), FakeSink("b"), Clock()
    engines = {"glue.db.a": "team_a", "glue.db.b": "team_b"}
    r = EngineRouter({"team_a": a, "team_b": b}, engines.__getitem__, clock, lambda: Breaker(3, 10, 60))  # type: ignore[dict-item]
    return r, a, b, clock


def request(table: str) -> WriteRequest:
    return WriteRequest(uuid4(), table, "s3://wh/x", {}, [], 1, session_id=str(uuid4()))


async def test_each_table_goes_to_its_engine() -> None:
    r, a, b, _ = router()
    await r.append(request("glue.db.a"), None)  # type: ignore[arg-type]
    await r.batch_counts("glue.db.b", uuid4())
    assert (a.calls, b.calls) == (["append glue.db.a"], ["counts glue.db.b"])


async def test_a_down_engine_fails_fast_and_the_other_goes_on() -> None:
    r, a, b, clock = router()
    a.down = True
    for _ in range(3):
        with pytest.raises(TransientError):
            await r.append(request("glue.db.a"), None)  # type: ignore[arg-type]
    assert len(a.calls) == 3 and r.breakers["team_a"].state == OPEN
    with pytest.raises(TransientError) as caught:
        await r.append(request("glue.db.a"), None)  # type: ignore[arg-type]
    assert len(a.calls) == 3  # refused without a call to the engine
    assert caught.value.error_class == "SparkUnavailable" and "engine team_a is failing" in str(caught.value)
    assert await r.append(request("glue.db.b"), None) == {"n": 1}  # type: ignore[arg-type]
    assert r.breakers["team_b"].state == CLOSED and b.calls == ["append glue.db.b"]
    assert await r.stop("s", "glue.db.a") is False and a.calls[-1] == "stop glue.db.a"  # never refused
    clock.now += 10  # the cooldown passed: one probe goes through and closes it
    a.down = False
    assert await r.append(request("glue.db.a"), None) == {"n": 1}  # type: ignore[arg-type]
    assert r.breakers["team_a"].state == CLOSED


async def test_a_data_error_proves_the_engine_up() -> None:
    r, a, _, _ = router()
    a.down = True
    for _ in range(2):
        with pytest.raises(TransientError):
            await r.batch_counts("glue.db.a", uuid4())
    a.down, a.data_error = False, True
    with pytest.raises(DataError):
        await r.batch_counts("glue.db.a", uuid4())
    assert r.breakers["team_a"].failures == 0 and r.breakers["team_a"].state == CLOSED


async def test_ping_fails_only_when_no_engine_answers() -> None:
    r, a, b, _ = router()
    a.down = True
    assert await r.ping() == "team_a: SparkUnavailable; team_b: b-4.0"
    b.down = True
    with pytest.raises(TransientError):
        await r.ping()


async def test_a_cancelled_probe_lets_the_next_one_through() -> None:
    r, a, _, clock = router()
    a.down = True
    for _ in range(3):
        with pytest.raises(TransientError):
            await r.batch_counts("glue.db.a", uuid4())
    clock.now += 10
    gate = asyncio.Event()

    async def hangs(table: str, batch_id: Any) -> dict[str, int]:
        await gate.wait()
        return {}

    a.batch_counts = hangs  # type: ignore[method-assign]
    probe = asyncio.create_task(r.batch_counts("glue.db.a", uuid4()))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    a.down = False
    gate.set()
    assert await r.batch_counts("glue.db.a", uuid4()) == {}


async def test_breaker_states_are_written_now_and_then_and_at_once_on_a_change() -> None:
    r, a, _, clock = router()
    written: list[tuple[str, str, float | None, str]] = []
    wrote = asyncio.Event()

    async def write(engine: str, state: str, failing_s: float | None, error: str) -> None:
        written.append((engine, state, failing_s, error))
        wrote.set()

    loop = asyncio.create_task(r.report_loop(write, every_s=3600))
    await asyncio.wait_for(wrote.wait(), 5)
    assert sorted(w[:2] for w in written) == [("team_a", "closed"), ("team_b", "closed")]
    written.clear()
    wrote.clear()
    a.down = True
    for _ in range(3):
        with pytest.raises(TransientError):
            await r.batch_counts("glue.db.a", uuid4())
    clock.now += 7
    await asyncio.wait_for(wrote.wait(), 5)  # at once, not after the hour
    loop.cancel()
    state = {w[0]: w for w in written}["team_a"]
    assert state[1] == "open" and state[2] == 7 and "SparkUnavailable" in state[3]


# -- operator commands and the CLI's redactor --------------------------------------------------


def test_operator_commands_write_through_the_tables_own_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.engines import engine_of_table, engine_sink

    r = routes()
    assert engine_of_table(r, "glue.db.a").name == "team_a"  # type: ignore[union-attr]
    assert engine_of_table(r, "glue.db.c") is None  # the default engine
    assert engine_of_table(r, "glue.db.unknown") is None and engine_of_table(None, "glue.db.a") is None
    monkeypatch.setenv("TEAM_B_TOKEN", "canary-b-7731")
    seen: list[str] = []
    base = SparkSettings(url="sc://default:15002")
    sink = engine_sink(base, engine_of_table(r, "glue.db.b"), on_secret=seen.append, fail_fast=True)
    assert sink._url() == "sc://spark-b.example.com:15002/;token=canary-b-7731" and seen == ["canary-b-7731"]
    assert engine_sink(base, None)._url() == "sc://default:15002"


def test_every_engine_token_is_known_to_the_redactor_before_a_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.engines import engine_secrets

    token = tmp_path / "token"
    token.write_text("canary-a-5521\n")
    monkeypatch.setenv("TEAM_B_TOKEN", "canary-b-9032")
    r = routes(**{"/var/run/secrets/team-a/token": str(token), 'x-route = "team-a"': 'x-api-key = "canary-h-118"'})
    found = engine_secrets(r)
    assert {"canary-a-5521", "canary-b-9032", "canary-h-118"} <= set(found)
    assert "icefeed" not in found  # a user id is no secret
    token.unlink()  # an unreadable token file: nothing to register, and no error here
    monkeypatch.delenv("TEAM_B_TOKEN")
    assert "canary-a-5521" not in engine_secrets(r)


def test_the_pipeline_reads_and_waits_by_the_dialect_of_each_tables_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-file JSON is parsed by the worker for a Sail engine only (Sail's reader knows JSON
    lines); recovery waits out each engine's own detached limit, the runner the longest."""
    from worker.pipeline import Pipeline
    from worker.settings import load_settings

    for name in ("ICEFEED_SPARK_DIALECT", "ICEFEED_SPARK_DETACHED_LIMIT_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICEFEED_SPARK_DIALECT", "spark")
    text = ROUTES.format(extra="").replace('token_env = "TEAM_B_TOKEN"', 'token_env = "TEAM_B_TOKEN"\ndialect = "sail"')
    r = parse_routes(text.replace('format = "json"', 'format = "json"\noptions = { multiline = true }'))
    p = Pipeline(load_settings(), r, None, None, None, None)  # type: ignore[arg-type]
    assert p.parses_locally("b") and not p.parses_locally("a") and not p.parses_locally("c")
    assert p.worker_reads("b", 10**9) and not p.worker_reads("a", 10**9)
    assert (p.detached_limit_s("glue.db.b"), p.detached_limit_s("glue.db.a")) == (3900, 3900)
    monkeypatch.setenv("ICEFEED_SPARK_DIALECT", "sail")  # now the fleet is Sail, team b's engine too
    p = Pipeline(load_settings(), r, None, None, None, None)  # type: ignore[arg-type]
    assert p.parses_locally("a") and (p.detached_limit_s("glue.db.a"), p.detached_limit_s()) == (3600, 3600)
