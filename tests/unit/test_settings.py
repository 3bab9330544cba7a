"""Unit tests for worker.settings: ICEFEED_* environment parsing, defaults and error reporting."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.domain.errors import ConfigError
from worker.settings import REPO_ROOT, PgSettings, Settings, env_name, load_settings, milliseconds, require_queues

TOKEN = "s3cr3t-token-0xdeadbeef"
PASSWORD = "hunter2pass-xyz"
SPARK_URL = f"sc://spark.internal:15002/;token={TOKEN};use_ssl=true"
PG_DSN = f"postgresql://icefeed:{PASSWORD}@db.internal:5432/ledger"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Settings are case-insensitive on names: drop every ICEFEED_* variable, whatever its case."""
    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_"):
            monkeypatch.delenv(name)
    return monkeypatch


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.error_class == "ConfigError"
    return str(info.value)


# --------------------------------------------------------------------------- defaults


def test_defaults_without_any_variable() -> None:
    s = load_settings()
    assert s.sqs.queue_urls == []
    assert s.sqs.max_messages == 10
    assert s.sqs.wait_time_s == 20
    assert s.spark.url.get_secret_value() == "sc://127.0.0.1:15002"
    assert s.pg.dsn.get_secret_value() == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert s.pg.ledger_schema == "icefeed"
    assert s.batch.max_files == 200
    assert s.batch.max_bytes == 512 * 1024 * 1024
    assert s.batch.max_wait_s == 1.0
    assert s.lease.ttl_s == 120
    assert s.aws.region == "us-east-1"
    assert s.aws.endpoint_url is None
    assert s.routes_file == Path("routes.toml")
    assert s.migrations_dir == REPO_ROOT / "migrations"
    assert s.log_format == "auto"
    assert s.log_level == "INFO"
    assert s.faults == ""


def test_default_worker_id_is_host_and_pid() -> None:
    assert load_settings().worker_id == f"{socket.gethostname()}-{os.getpid()}"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.batch.max_files = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- parsing


def test_nested_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_PG_DSN", PG_DSN)
    clean_env.setenv("ICEFEED_BATCH_MAX_FILES", "7")
    clean_env.setenv("ICEFEED_LEASE_TTL_S", "60")
    clean_env.setenv("ICEFEED_SPARK_URL", SPARK_URL)
    clean_env.setenv("ICEFEED_PG_LEDGER_SCHEMA", "ledger_2")
    clean_env.setenv("ICEFEED_AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    s = load_settings()
    assert s.pg.dsn.get_secret_value() == PG_DSN
    assert s.batch.max_files == 7
    assert s.lease.ttl_s == 60
    assert s.spark.url.get_secret_value() == SPARK_URL
    assert s.pg.ledger_schema == "ledger_2"
    assert s.aws.endpoint_url == "http://127.0.0.1:5000"
    # untouched siblings keep their defaults
    assert s.batch.max_bytes == 512 * 1024 * 1024
    assert s.lease.sweep_interval_s == 15.0


def test_top_level_fields_with_underscores(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_ROUTES_FILE", "/etc/icefeed/routes.toml")
    clean_env.setenv("ICEFEED_MIGRATIONS_DIR", "/opt/migrations")
    clean_env.setenv("ICEFEED_WORKER_ID", "worker-a")
    clean_env.setenv("ICEFEED_SHUTDOWN_GRACE_S", "5.5")
    clean_env.setenv("ICEFEED_LOG_FORMAT", "json")
    clean_env.setenv("ICEFEED_LOG_LEVEL", "DEBUG")
    clean_env.setenv("ICEFEED_FAULTS", "after_commit=exit")
    s = load_settings()
    assert s.routes_file == Path("/etc/icefeed/routes.toml")
    assert s.migrations_dir == Path("/opt/migrations")
    assert s.worker_id == "worker-a"
    assert s.shutdown_grace_s == 5.5
    assert s.log_format == "json"
    assert s.log_level == "DEBUG"
    assert s.faults == "after_commit=exit"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://q/1", ["http://q/1"]),
        ("http://q/1,https://q/2", ["http://q/1", "https://q/2"]),
        (" http://q/1 , https://q/2 ,, ", ["http://q/1", "https://q/2"]),
        ("", []),
        ('["http://q/1", "https://q/2"]', ["http://q/1", "https://q/2"]),
        ('  ["http://q/1"]  ', ["http://q/1"]),
        ("[]", []),
    ],
)
def test_queue_urls_comma_list_or_json(clean_env: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    clean_env.setenv("ICEFEED_SQS_QUEUE_URLS", raw)
    assert load_settings().sqs.queue_urls == expected


def test_queue_urls_json_round_trip(clean_env: pytest.MonkeyPatch) -> None:
    urls = [f"https://sqs.eu-west-1.amazonaws.com/123456789012/q{i}" for i in range(3)]
    clean_env.setenv("ICEFEED_SQS_QUEUE_URLS", json.dumps(urls))
    assert load_settings().sqs.queue_urls == urls


def test_overrides_are_accepted() -> None:
    s = load_settings(sqs={"queue_urls": "http://a/q,http://b/q"}, worker_id="w9")
    assert s.sqs.queue_urls == ["http://a/q", "http://b/q"]
    assert s.worker_id == "w9"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ICEFEED_SQS_MAX_MESSAGES", "11"),
        ("ICEFEED_SQS_MAX_MESSAGES", "0"),
        ("ICEFEED_SQS_WAIT_TIME_S", "21"),
        ("ICEFEED_SQS_VISIBILITY_TIMEOUT_S", "5"),
        ("ICEFEED_BATCH_MAX_FILES", "0"),
        ("ICEFEED_BATCH_MAX_FILES", "abc"),
        ("ICEFEED_LEASE_TTL_S", "4"),
        ("ICEFEED_SPARK_CONCURRENCY", "65"),
        ("ICEFEED_SPARK_URL", "http://spark:15002"),
        ("ICEFEED_SPARK_URL", "SC://spark:15002"),
        ("ICEFEED_PG_LEDGER_SCHEMA", "x; drop"),
        ("ICEFEED_PG_LEDGER_SCHEMA", "1abc"),
        ("ICEFEED_PG_LEDGER_SCHEMA", 'a"b'),
        ("ICEFEED_PG_LEDGER_SCHEMA", "a" * 64),
        ("ICEFEED_PG_CONNECT_TIMEOUT_S", "0"),
        ("ICEFEED_SQS_QUEUE_URLS", "not a url"),
        ("ICEFEED_SQS_QUEUE_URLS", "ftp://q/1"),
        ("ICEFEED_SQS_QUEUE_URLS", "[not json"),
        ("ICEFEED_SQS_QUEUE_URLS", "[1, 2]"),
        ("ICEFEED_LOG_FORMAT", "xml"),
        ("ICEFEED_LOG_LEVEL", "TRACE"),
        ("ICEFEED_SHUTDOWN_GRACE_S", "-1"),
        # a typo in a nested name is reported, not silently ignored
        ("ICEFEED_SQS_QUEUE_URL", "http://q/1"),
    ],
)
def test_bad_variable_is_named(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    message = config_error(clean_env, **{name: value})
    assert message.startswith("invalid settings:")
    assert f"\n  {name}: " in message


def test_ledger_schema_at_limit_is_accepted(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_PG_LEDGER_SCHEMA", "_" + "a" * 62)
    assert load_settings().pg.ledger_schema == "_" + "a" * 62


def test_several_errors_are_all_named(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(
        clean_env,
        ICEFEED_SQS_MAX_MESSAGES="11",
        ICEFEED_SPARK_URL="grpc://spark:15002",
        ICEFEED_PG_LEDGER_SCHEMA="x; drop",
        ICEFEED_BATCH_MAX_FILES="-3",
    )
    lines = message.splitlines()[1:]
    named = {line.strip().split(":", 1)[0] for line in lines}
    assert named == {
        "ICEFEED_SQS_MAX_MESSAGES",
        "ICEFEED_SPARK_URL",
        "ICEFEED_PG_LEDGER_SCHEMA",
        "ICEFEED_BATCH_MAX_FILES",
    }
    assert "sc://" in message


def test_error_message_does_not_echo_a_secret(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, ICEFEED_SPARK_URL=f"https://spark:443/;token={TOKEN}")
    assert "ICEFEED_SPARK_URL" in message
    assert TOKEN not in message


def test_env_name() -> None:
    assert env_name(("sqs", "max_messages")) == "ICEFEED_SQS_MAX_MESSAGES"
    assert env_name(("sqs", "queue_urls", 3)) == "ICEFEED_SQS_QUEUE_URLS"
    assert env_name(("worker_id",)) == "ICEFEED_WORKER_ID"


def test_malformed_section_variable_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_SQS", "{bad")
    with pytest.raises(ConfigError, match="ICEFEED_SQS"):
        load_settings()


def test_pool_min_above_pool_max_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_PG_POOL_MIN", "9")
    clean_env.setenv("ICEFEED_PG_POOL_MAX", "8")
    with pytest.raises(ConfigError, match="ICEFEED_PG_POOL_M"):
        load_settings()


# --------------------------------------------------------------------------- require_queues


def test_require_queues_without_queues() -> None:
    with pytest.raises(ConfigError, match="ICEFEED_SQS_QUEUE_URLS") as info:
        require_queues(load_settings())
    assert "at least one queue URL" in str(info.value)


def test_require_queues_with_queues(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_SQS_QUEUE_URLS", "http://q/1")
    require_queues(load_settings())  # does not raise


# --------------------------------------------------------------------------- secrets


@pytest.fixture
def secret_settings(clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("ICEFEED_SPARK_URL", SPARK_URL)
    clean_env.setenv("ICEFEED_PG_DSN", PG_DSN)
    clean_env.setenv("ICEFEED_SQS_QUEUE_URLS", "http://q/1")
    return load_settings()


def test_secrets_are_secret_str(secret_settings: Settings) -> None:
    assert isinstance(secret_settings.spark.url, SecretStr)
    assert isinstance(secret_settings.pg.dsn, SecretStr)
    assert secret_settings.spark.url.get_secret_value() == SPARK_URL
    assert secret_settings.pg.dsn.get_secret_value() == PG_DSN


@pytest.mark.parametrize(
    "render",
    [
        repr,
        str,
        lambda s: s.model_dump_json(),
        lambda s: json.dumps(s.model_dump(mode="json")),
        lambda s: repr(s.spark),
        lambda s: repr(s.pg),
        lambda s: str(s.model_dump()),
    ],
    ids=["repr", "str", "model_dump_json", "model_dump_json_mode", "repr_spark", "repr_pg", "str_model_dump"],
)
def test_rendered_settings_hide_secrets(secret_settings: Settings, render: object) -> None:
    text = render(secret_settings)  # type: ignore[operator]
    assert isinstance(text, str)
    assert TOKEN not in text
    assert PASSWORD not in text
    assert "**********" in text
    # the non-secret parts are still there: the rendering is not just empty
    assert "http://q/1" in text or "ledger_schema" in text or "session_timezone" in text


# --------------------------------------------------------------------------- PostgreSQL time limits


def test_every_wait_on_postgresql_is_bounded_by_default() -> None:
    pg = load_settings().pg
    assert (pg.statement_timeout_s, pg.lock_timeout_s, pg.idle_in_transaction_timeout_s) == (15.0, 5.0, 60.0)
    assert (pg.command_timeout_s, pg.acquire_timeout_s, pg.connect_timeout_s) == (30.0, 10.0, 10.0)
    assert (pg.keepalive_idle_s, pg.keepalive_interval_s, pg.keepalive_count) == (30, 10, 3)
    assert pg.lock_timeout_s < pg.statement_timeout_s < pg.command_timeout_s


def test_server_settings_carry_the_limits_in_milliseconds(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ICEFEED_PG_STATEMENT_TIMEOUT_S", "2.5")
    clean_env.setenv("ICEFEED_PG_LOCK_TIMEOUT_S", "0.25")
    clean_env.setenv("ICEFEED_PG_IDLE_IN_TRANSACTION_TIMEOUT_S", "0")
    clean_env.setenv("ICEFEED_PG_COMMAND_TIMEOUT_S", "4")
    clean_env.setenv("ICEFEED_PG_KEEPALIVE_IDLE_S", "7")
    clean_env.setenv("ICEFEED_PG_LEDGER_SCHEMA", "ledger_x")
    assert load_settings().pg.server_settings("icefeed") == {
        "search_path": "ledger_x",
        "application_name": "icefeed",
        "statement_timeout": "2500",
        "lock_timeout": "250",
        "idle_in_transaction_session_timeout": "0",
        "tcp_keepalives_idle": "7",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }


@pytest.mark.parametrize(("seconds", "text"), [(0, "0"), (0.0001, "1"), (0.0015, "2"), (1, "1000"), (15.0, "15000")])
def test_milliseconds_never_turns_a_limit_into_off(seconds: float, text: str) -> None:
    assert milliseconds(seconds) == text


def test_zero_turns_server_limits_off(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("STATEMENT", "LOCK", "IDLE_IN_TRANSACTION", "COMMAND"):
        clean_env.setenv(f"ICEFEED_PG_{name}_TIMEOUT_S", "0")
    pg = load_settings().pg
    settings = pg.server_settings("icefeed")
    assert settings["statement_timeout"] == settings["lock_timeout"] == "0"
    assert pg.command_timeout_s == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ICEFEED_PG_STATEMENT_TIMEOUT_S", "-1"),
        ("ICEFEED_PG_STATEMENT_TIMEOUT_S", "soon"),
        ("ICEFEED_PG_LOCK_TIMEOUT_S", "-0.5"),
        ("ICEFEED_PG_IDLE_IN_TRANSACTION_TIMEOUT_S", "-1"),
        ("ICEFEED_PG_COMMAND_TIMEOUT_S", "-1"),
        ("ICEFEED_PG_ACQUIRE_TIMEOUT_S", "0"),
        ("ICEFEED_PG_KEEPALIVE_IDLE_S", "-1"),
        ("ICEFEED_PG_KEEPALIVE_COUNT", "many"),
    ],
)
def test_bad_limit_is_named(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    assert f"\n  {name}: " in config_error(clean_env, **{name: value})


def test_lock_timeout_must_be_below_statement_timeout(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, ICEFEED_PG_LOCK_TIMEOUT_S="20")
    assert "ICEFEED_PG_LOCK_TIMEOUT_S (20) must be below ICEFEED_PG_STATEMENT_TIMEOUT_S (15)" in message
    # with the statement limit off, any lock limit is fine
    clean_env.setenv("ICEFEED_PG_STATEMENT_TIMEOUT_S", "0")
    assert load_settings().pg.lock_timeout_s == 20


def test_command_timeout_must_be_above_statement_timeout(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, ICEFEED_PG_COMMAND_TIMEOUT_S="15")
    assert "ICEFEED_PG_COMMAND_TIMEOUT_S (15) must be above ICEFEED_PG_STATEMENT_TIMEOUT_S (15)" in message
    clean_env.setenv("ICEFEED_PG_COMMAND_TIMEOUT_S", "0")  # no client-side limit: allowed
    assert load_settings().pg.command_timeout_s == 0


def test_pg_settings_are_frozen() -> None:
    with pytest.raises(ValueError):
        PgSettings().lock_timeout_s = 1  # type: ignore[misc]


def test_memory_settings_and_decode_limits(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.memory.budget_bytes == 384 * 1024 * 1024  # fits the Deployment's 1 GiB (tests/infra)
    assert (s.spark.worker_decode_max_bytes, s.spark.worker_decode_max_values) == (64 * 1024 * 1024, 3_000_000)
    clean_env.setenv("ICEFEED_MEMORY_BUDGET_BYTES", "268435456")
    clean_env.setenv("ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES", "1048576")
    clean_env.setenv("ICEFEED_SPARK_WORKER_DECODE_MAX_VALUES", "1000")
    s = load_settings()
    assert (s.memory.budget_bytes, s.spark.worker_decode_max_bytes, s.spark.worker_decode_max_values) == (
        268435456,
        1048576,
        1000,
    )
    # One decoded row must always fit a gRPC message (128 MiB) with room to spare.
    clean_env.setenv("ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES", str(200 * 1024 * 1024))
    with pytest.raises(ConfigError, match="ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES"):
        load_settings()


def test_no_queue_is_refused_by_name_and_url_parameters_keep_equals_signs_in_values(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from worker.settings import spark_url_params

    with pytest.raises(ConfigError) as info:
        require_queues(load_settings())
    assert str(info.value) == "invalid settings:\n  ICEFEED_SQS_QUEUE_URLS: at least one queue URL is required"
    assert spark_url_params("sc://h:1/;token=a=b;user_id=u") == {"token": "a=b", "user_id": "u"}
