"""Secrets are registered once at start and masked in every output: what counts as a secret
(every setting that can hold one, with canary values), the spellings it can take, the errors of
the clients that quote them, the CLI's error and result printing, the ledger's stored texts, and
the /readyz, /healthz and /metrics bodies."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from worker.adapters.pg_ledger import PgLedger
from worker.domain.errors import ConfigError, TransientError
from worker.domain.outcomes import FileResult
from worker.observability.health import HealthServer
from worker.observability.logging import MASK, Redactor, configure, settings_secrets
from worker.observability.metrics import Metrics
from worker.ports import Message
from worker.probes import ProbeResult
from worker.settings import load_settings


def canary(name: str) -> str:
    return f"canary-{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _logging_restored(restore_logging: None) -> None:
    """Every test here may call configure(): restored afterwards (tests/unit/conftest.py)."""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("ICEFEED_", "AWS_", "SPARK_CONNECT_", "PG")):
            monkeypatch.delenv(name)
    return monkeypatch


# --------------------------------------------------------------------------- what is registered


def test_every_setting_that_can_hold_a_secret_is_registered(clean_env: pytest.MonkeyPatch) -> None:
    c = {
        n: canary(n)
        for n in (
            "token",
            "header",
            "url_password",
            "dsn_password",
            "dsn_query_password",
            "sslpassword",
            "catalog_secret",
            "catalog_access_key",
            "catalog_token",
            "catalog_credential",
            "catalog_header",
            "catalog_uri_password",
            "aws_secret",
            "aws_session",
            "spark_env_token",
            "pgpassword",
        )
    }
    clean_env.setenv(
        "ICEFEED_SPARK_URL",
        f"sc://spark.example:443/;token={c['token']};user_id=etl-user;use_ssl=true;x-api-key={c['header']}",
    )
    clean_env.setenv(
        "ICEFEED_PG_DSN",
        f"postgresql://icefeed:{c['dsn_password']}@db.example:5432/ledger"
        f"?sslmode=require&password={c['dsn_query_password']}&sslpassword={c['sslpassword']}",
    )
    catalog = {
        "type": "rest",
        "uri": f"https://icefeed:{c['catalog_uri_password']}@catalog.example/api",
        "glue.region": "eu-west-1",
        "s3.secret-access-key": c["catalog_secret"],
        "s3.access-key-id": c["catalog_access_key"],
        "token": c["catalog_token"],
        "credential": f"client-id:{c['catalog_credential']}",
        "header.X-Iceberg-Access-Delegation": c["catalog_header"],
    }
    clean_env.setenv("ICEFEED_ICEBERG_CATALOG", json.dumps(catalog))
    environ = {
        "AWS_SECRET_ACCESS_KEY": c["aws_secret"],
        "AWS_SESSION_TOKEN": c["aws_session"],
        "SPARK_CONNECT_AUTHENTICATE_TOKEN": c["spark_env_token"],
        "PGPASSWORD": c["pgpassword"],
        "AWS_REGION": "eu-west-1",
    }
    secrets = settings_secrets(load_settings(), environ)
    redactor = Redactor(secrets)
    for name, value in c.items():
        if name == "url_password":
            continue  # a Spark URL with user:password@ is tested below
        assert redactor.scrub(f"said: {value}.") == f"said: {MASK}.", name
    for plain in ("etl-user", "true", "eu-west-1", "rest", "require", "spark.example", "icefeed", "client-id"):
        assert plain not in secrets, plain  # what configures without authenticating stays readable


def test_spark_url_secrets_cover_the_password_and_every_header_but_not_the_plain_parameters() -> None:
    from worker.observability.logging import spark_url_secrets

    url = "sc://svc:pw-1234@h:1/;token=tok-1234;user_agent=icefeed-ua;session_id=s;x-route=team-a;x-key=a=b"
    assert spark_url_secrets(url) == ["pw-1234", "tok-1234", "team-a", "a=b"]


def test_defaults_register_no_secret(clean_env: pytest.MonkeyPatch) -> None:
    assert settings_secrets(load_settings(), {}) == []


# --------------------------------------------------------------------------- spellings and echoes


@pytest.mark.parametrize(
    "spelling",
    [
        lambda s: s,
        lambda s: json.dumps(s),  # in a JSON document
        lambda s: repr({"key": s}),  # in a Python repr (a dict in an exception message)
        lambda s: __import__("urllib.parse").parse.quote(s, safe=""),  # in a URL
        lambda s: s.replace("\\", "\\\\").replace('"', '\\"'),  # in a Prometheus label value
    ],
)
def test_a_secret_is_masked_in_every_spelling(spelling: Any) -> None:
    secret = 'p@ss"wörd/\\x' + uuid.uuid4().hex[:6]
    text = spelling(secret)
    assert secret not in Redactor([secret]).scrub(text)
    assert Redactor([secret]).scrub(text) != text


def test_spark_client_errors_that_quote_the_url_are_masked() -> None:
    from pyspark.sql.connect.client.core import DefaultChannelBuilder

    from worker.observability.logging import spark_url_secrets

    header, password = canary("header"), canary("password")
    for url in (f"sc://h:1/;token=t;x-api-key={header}=x", f"sc://svc:{password}@h:1"):
        with pytest.raises(ValueError, match="INVALID_CONNECT_URL") as caught:
            DefaultChannelBuilder(url)
        said = str(caught.value)
        assert header in said or password in said  # the client does quote it
        scrubbed = Redactor(spark_url_secrets(url)).scrub(said)
        assert header not in scrubbed and password not in scrubbed


def test_catalog_errors_that_quote_the_properties_are_masked() -> None:
    from pyiceberg.catalog import load_catalog

    from worker.observability.logging import catalog_secrets

    password = canary("uri")
    props = {"uri": f"nocatalog://u:{password}@catalog.invalid/", "s3.secret-access-key": canary("key")}
    with pytest.raises(ValueError, match="nocatalog") as caught:
        load_catalog("icefeed", **props)
    assert password in str(caught.value)
    assert password not in Redactor(catalog_secrets(props)).scrub(str(caught.value))


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (lambda s: TransientError(f"Spark Connect unavailable: sc://h:1/;token={s}"), 1),
        (lambda s: ConfigError(f"bad: {s}"), 2),
        (lambda s: RuntimeError(f"unexpected: {{'token': '{s}'}}"), 1),
    ],
)
def test_cli_errors_are_printed_scrubbed(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: Any, code: int
) -> None:
    import worker.__main__ as cli

    token = canary("token")
    clean_env.setenv("ICEFEED_SPARK_URL", f"sc://h:1/;token={token}")
    clean_env.setenv("ICEFEED_LOG_FORMAT", "json")

    async def failing(_settings: Any) -> list[str]:
        raise raised(token)

    clean_env.setattr(cli, "run_migrate", failing)
    assert cli.main(["migrate"]) == code
    out = capsys.readouterr()
    assert token not in out.out + out.err
    assert MASK in out.err


def test_operator_command_results_are_scrubbed(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.admin import cli

    secret = canary("password")
    result = {"files": [{"error_message": f"connect to postgresql://u:{secret}@db/x failed ({secret})"}]}
    clean_env.setattr(cli, "_dispatch", lambda _args, _settings: (result, lambda r: json.dumps(r)))
    for json_flag in (True, False):
        args = type("Args", (), {"command": "files", "json": json_flag})()
        assert cli.run(args, None, Redactor([secret])) == 0  # type: ignore[arg-type]
        printed = capsys.readouterr().out
        assert secret not in printed and MASK in printed


def test_library_loggers_with_handlers_of_their_own_are_scrubbed() -> None:
    """pyspark's Spark Connect logger writes through its own handler (SPARK_CONNECT_LOG_LEVEL)."""
    secret = canary("library")
    own = io.StringIO()
    library = logging.getLogger("tests.library_with_own_handler")
    handler = logging.StreamHandler(own)
    library.addHandler(handler)
    library.propagate = False
    try:
        configure(fmt="json", stream=io.StringIO(), secrets=[secret])
        library.warning("connecting with %s", secret)
        try:
            raise RuntimeError(f"refused {secret}")
        except RuntimeError:
            library.exception("failed")
    finally:
        library.removeHandler(handler)
    assert secret not in own.getvalue()
    assert f"connecting with {MASK}" in own.getvalue() and f"refused {MASK}" in own.getvalue()


def test_uncaught_exceptions_of_threads_are_logged_scrubbed() -> None:
    secret = canary("thread")
    out = io.StringIO()
    configure(fmt="json", stream=out, secrets=[secret])

    def boom() -> None:
        raise RuntimeError(f"thread saw {secret}")

    thread = threading.Thread(target=boom)
    thread.start()
    thread.join()
    assert secret not in out.getvalue()
    assert json.loads(out.getvalue().splitlines()[-1])["event"] == "exception_uncaught"


# --------------------------------------------------------------------------- the ledger


class FakeConn:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls

    async def fetchval(self, *args: Any) -> Any:
        self.calls.append(args)
        return 1  # the batch row was ours

    async def execute(self, *args: Any) -> str:
        self.calls.append(args)
        return ""

    async def fetch(self, *args: Any) -> list[Any]:
        self.calls.append(args)
        return []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


class FakePool(FakeConn):
    async def acquire(self, timeout: float | None = None) -> FakeConn:
        return FakeConn(self.calls)

    async def release(self, conn: FakeConn) -> None:
        return None


async def test_the_ledger_stores_every_text_scrubbed() -> None:
    secret = canary("ledger")
    said = f"Spark Connect: sc://h:1/;x-api-key={secret} refused"
    calls: list[tuple[Any, ...]] = []
    ledger = PgLedger(FakePool(calls), scrub=Redactor([secret]).scrub)  # type: ignore[arg-type]
    batch = uuid.uuid4()
    results = [FileResult(1, "FAILED", None, "SparkUnavailable", said), FileResult(2, "LOADED", 3)]
    await ledger.record_terminal([1], "FAILED", "Unknown", said)
    assert await ledger.finalize(batch, "w", results)
    assert await ledger.abort(batch, "w", "SparkUnavailable", said, results)
    await ledger.reject_message(Message("q", "m", "r", f"body {secret}", 1, None), said)
    stored = repr(calls)
    assert said.split(secret)[0] in stored  # the texts did reach the statements …
    assert secret not in stored  # … masked


# --------------------------------------------------------------------------- the HTTP endpoint


async def test_readyz_healthz_and_metric_labels_are_scrubbed() -> None:
    secret = canary("http")
    metrics = Metrics(CollectorRegistry())
    metrics.stage_duration.labels(f"stage {secret}").observe(1)

    async def readiness() -> list[ProbeResult]:
        return [ProbeResult("spark", False, f"sc://h:1/;x-api-key={secret}: refused", "fix it", 0.1)]

    def liveness() -> dict[str, tuple[bool, str]]:
        return {"receivers": (True, f"running with {secret}")}

    server = HealthServer(metrics, readiness, liveness, "127.0.0.1", 0, Redactor([secret]))
    async with server:
        task = asyncio.create_task(server.serve())
        bodies = {}
        for path in ("/readyz", "/healthz", "/metrics"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            bodies[path] = (await asyncio.wait_for(reader.read(), 10)).decode()
            writer.close()
            await writer.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for path, body in bodies.items():
        assert secret not in body, path
        assert MASK in body, path
    assert 'stage="stage ***"' in bodies["/metrics"]


async def test_maintenance_errors_reach_the_ledger_scrubbed() -> None:
    """A catalog error that echoes a credential is stored masked (the worker's ledger and the one
    ``icefeed maintain`` builds both scrub)."""
    from worker.adapters.pg_ledger import PgLedger
    from worker.observability.logging import Redactor

    secret = canary("catalog")
    stored: list[tuple[Any, ...]] = []

    class Conn:
        async def execute(self, query: str, *args: Any) -> str:
            stored.append(args)
            return "UPDATE 1"

    class Pool:
        async def acquire(self, timeout: float | None = None) -> Conn:
            return Conn()

        async def release(self, conn: Conn) -> None:
            return None

    ledger = PgLedger(Pool(), scrub=Redactor([secret]).scrub)  # type: ignore[arg-type]
    steps = [{"step": "inspect", "outcome": "failed", "error": f"OSError: bad s3.secret-access-key {secret}"}]
    await ledger.maintenance_finish("glue.db.t", "w1", "failed", f"inspect: {secret}", None, False, steps)
    (args,) = stored
    assert secret not in repr(args) and "inspect" in repr(args)


def test_an_engine_token_quoted_by_a_command_is_masked(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """The routes' engine tokens are registered when a command starts, before any engine is
    called: an error quoting one (here from ``icefeed migrate``) prints it masked."""
    import worker.__main__ as cli

    token = canary("engine-token")
    (tmp_path / "token").write_text(token)
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[engine]]\nname = "team_a"\nurl = "sc://spark-a:15002"\ntoken_file = "{tmp_path / "token"}"\n\n'
        '[[ingestion]]\nname = "a"\nbucket = "landing"\nprefix = "a/"\nformat = "json"\n'
        'table = "glue.db.a"\nlocation = "s3://wh/db/a"\nengine = "team_a"\n'
    )
    clean_env.setenv("ICEFEED_ROUTES_FILE", str(routes))
    clean_env.setenv("ICEFEED_LOG_FORMAT", "json")

    async def failing(_settings: Any) -> list[str]:
        raise TransientError(f"the engine refused {token}: expired")  # bare, no token= to recognise

    clean_env.setattr(cli, "run_migrate", failing)
    assert cli.main(["migrate"]) == 1
    out = capsys.readouterr()
    assert token not in out.out + out.err
    assert MASK in out.err
