"""Unit tests for worker.adapters.dialects: the Sail / Apache Spark and Iceberg / Parquet differences."""

from __future__ import annotations

import os

import pytest

from worker.adapters.dialects import Dialect, dialect_for, hadoop_escape, read_path
from worker.domain.errors import ConfigError, DataError
from worker.domain.policy import Policy, plan_batch
from worker.domain.schema import DOUBLE, LONG, STRING, Field, Struct
from worker.routes import parse_routes
from worker.settings import load_settings

SAIL = Dialect("sail", "iceberg")
SPARK_ICEBERG = Dialect("spark", "iceberg")
SPARK_PARQUET = Dialect("spark", "parquet")

ROUTES = """
[[ingestion]]
name = "{name}"
bucket = "landing"
format = "json"
table = "spark_catalog.db.t"
location = "file:///tmp/wh/t"
on_overwrite = "{on_overwrite}"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ICEFEED_"):
            monkeypatch.delenv(name)


def test_settings_choose_the_dialect(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dialect_for(load_settings().spark) == Dialect("spark", "iceberg", "")
    monkeypatch.setenv("ICEFEED_SPARK_TABLE_FORMAT", "parquet")
    monkeypatch.setenv("ICEFEED_SPARK_SOURCE_ROOT", "file:///tmp/mirror/")
    assert dialect_for(load_settings().spark) == Dialect("spark", "parquet", "file:///tmp/mirror")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ICEFEED_SPARK_TABLE_FORMAT": "delta"}, "ICEFEED_SPARK_TABLE_FORMAT"),
        ({"ICEFEED_SPARK_SOURCE_ROOT": "s3://elsewhere"}, "ICEFEED_SPARK_SOURCE_ROOT"),
        (
            {"ICEFEED_SPARK_DIALECT": "sail", "ICEFEED_SPARK_TABLE_FORMAT": "parquet"},
            "needs ICEFEED_SPARK_DIALECT=spark",
        ),
    ],
)
def test_bad_engine_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_source_paths() -> None:
    key = "in/a b%20[1]{x,y}*?.json"
    assert SAIL.source_path("b", key) == read_path("b", key) == "s3://b/in/a%20b%2520%5B1%5D%7Bx%2Cy%7D%2A%3F.json"
    # Hadoop Path takes the key literally but globs: only the glob characters are escaped.
    assert SPARK_ICEBERG.source_path("b", key) == r"s3://b/in/a b%20\[1\]\{x,y\}\*\?.json"
    mirrored = Dialect("spark", "parquet", "file:///m")
    assert mirrored.source_path("b", "k/x.json") == "file:///m/b/k/x.json"
    assert hadoop_escape("a\\b") == "a\\\\b"


def test_read_options_fail_fast_on_spark_only() -> None:
    assert SPARK_PARQUET.read_options("json", {"multiLine": "false"}) == {"mode": "FAILFAST", "multiLine": "false"}
    assert SPARK_PARQUET.read_options("csv", {})["mode"] == "FAILFAST"
    assert SPARK_PARQUET.read_options("parquet", {}) == {}
    assert SAIL.read_options("json", {"multiLine": "false"}) == {"multiLine": "false"}


def test_capabilities() -> None:
    assert SAIL.parses_whole_file_json and not SPARK_PARQUET.parses_whole_file_json
    assert SPARK_PARQUET.has_file_metadata and not SAIL.has_file_metadata
    assert (SAIL.create_block, SPARK_PARQUET.create_block) == ("create_table", "create_parquet_table")
    assert SAIL.supports_delete and SPARK_ICEBERG.supports_delete and not SPARK_PARQUET.supports_delete


TABLE = Struct((Field("id", LONG), Field("price", DOUBLE)))


def test_evolution_on_a_parquet_table_adds_top_level_columns() -> None:
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, Struct((Field("id", LONG), Field("color", STRING, False))))])
    assert SPARK_PARQUET.evolution_statements("`c`.`d`.`t`", plan) == [
        "ALTER TABLE `c`.`d`.`t` ADD COLUMNS (`color` STRING)"  # nullable, whatever the file said
    ]
    assert SAIL.evolution_statements("`c`.`d`.`t`", plan) == []  # mergeSchema on append
    (stmt,) = SPARK_ICEBERG.evolution_statements("`c`.`d`.`t`", plan)
    assert "'write.spark.accept-any-schema' = 'true'" in stmt


def test_no_statements_without_a_table_change() -> None:
    unchanged = plan_batch(Policy.EVOLVE, TABLE, [(1, Struct((Field("id", LONG),)))])
    created = plan_batch(Policy.EVOLVE, None, [(1, TABLE)])
    for dialect in (SAIL, SPARK_ICEBERG, SPARK_PARQUET):
        assert dialect.evolution_statements("`c`.`d`.`t`", unchanged) == []
        assert dialect.evolution_statements("`c`.`d`.`t`", created) == []


def test_a_parquet_table_refuses_changes_it_cannot_make() -> None:
    nested = Struct((Field("c", Struct((Field("a", LONG),))),))
    plan = plan_batch(
        Policy.EVOLVE, nested, [(1, Struct((Field("c", Struct((Field("a", LONG), Field("b", STRING)))),)))]
    )
    with pytest.raises(DataError, match="only gain new top-level columns") as info:
        SPARK_PARQUET.evolution_statements("`c`.`d`.`t`", plan)
    assert info.value.error_class == "UnsupportedSchemaChange"
    # Iceberg merges nested fields on append (mergeSchema) once the table accepts any schema.
    assert SPARK_ICEBERG.evolution_statements("`c`.`d`.`t`", plan) == [
        "ALTER TABLE `c`.`d`.`t` SET TBLPROPERTIES ('write.spark.accept-any-schema' = 'true')"
    ]
    assert SAIL.evolution_statements("`c`.`d`.`t`", plan) == []  # Sail: mergeSchema alone


def test_replace_routes_are_refused_on_parquet_at_start() -> None:
    replacing = parse_routes(ROUTES.format(name="snap", on_overwrite="replace"))
    appending = parse_routes(ROUTES.format(name="plain", on_overwrite="append"))
    with pytest.raises(ConfigError, match=r"snap: on_overwrite = \"replace\".*TABLE_FORMAT=parquet"):
        SPARK_PARQUET.check_routes(replacing)
    SPARK_PARQUET.check_routes(appending)
    SPARK_ICEBERG.check_routes(replacing)
    SAIL.check_routes(replacing)


class Recorder:
    """Records the chain of calls made on it (a stand-in for a DataFrame or a session)."""

    def __init__(self, calls: list[str] | None = None, path: str = "") -> None:
        self.calls = [] if calls is None else calls
        self.path = path

    def __getattr__(self, name: str) -> Recorder:
        return Recorder(self.calls, f"{self.path}.{name}" if self.path else name)

    def __call__(self, *args: object) -> Recorder:
        self.calls.append(f"{self.path}({', '.join(map(repr, args))})")
        return Recorder(self.calls, self.path)


def test_append_and_refresh_per_engine_and_format() -> None:
    iceberg, parquet = Recorder(), Recorder()
    SPARK_ICEBERG.append(iceberg, "`c`.`d`.`t`")
    assert iceberg.calls == [
        "writeTo('`c`.`d`.`t`')",
        "writeTo.option('mergeSchema', 'true')",
        "writeTo.option.append()",
    ]
    SPARK_PARQUET.append(parquet, "`c`.`d`.`t`")
    assert parquet.calls == [
        "write.mode('append')",
        "write.mode.format('parquet')",
        "write.mode.format.saveAsTable('`c`.`d`.`t`')",
    ]
    spark, sail = Recorder(), Recorder()
    SPARK_PARQUET.refresh(spark, "`c`.`d`.`t`")
    SAIL.refresh(sail, "`c`.`d`.`t`")
    assert spark.calls == ["catalog.refreshTable('`c`.`d`.`t`')"] and sail.calls == []


def test_sail_reads_from_a_mirror_root_too() -> None:
    assert Dialect("sail", "iceberg", "file:///m").source_path("b", "k/a b.json") == "file:///m/b/k/a%20b.json"


def test_refusals_name_what_cannot_be_done() -> None:
    nested = Struct((Field("c", Struct((Field("a", LONG),))),))
    wider = Struct((Field("c", Struct((Field("a", LONG), Field("b", STRING), Field("d", STRING)))),))
    plan = plan_batch(Policy.EVOLVE, nested, [(1, wider)])
    with pytest.raises(DataError) as info:
        SPARK_PARQUET.evolution_statements("`c`.`d`.`t`", plan)
    assert str(info.value) == (
        "a parquet table can only gain new top-level columns (ALTER TABLE ADD COLUMNS), not: "
        "nested field added at c.b: string (file); nested field added at c.d: string (file)"
        " (use ICEFEED_SPARK_TABLE_FORMAT=iceberg)"
    )
    second = ROUTES.format(name="b", on_overwrite="replace").replace('"landing"', '"other"').replace("/t", "/u")
    two = parse_routes(ROUTES.format(name="a", on_overwrite="replace") + second.replace("db.t", "db.u"))
    with pytest.raises(ConfigError) as refused:
        SPARK_PARQUET.check_routes(two)
    assert str(refused.value).startswith('ingestion(s) a, b: on_overwrite = "replace" deletes rows, which ')
