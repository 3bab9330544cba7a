"""Unit tests for the named SQL blocks (worker.sql) and migration discovery (pg_ledger)."""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path

import pytest

from worker.adapters.pg_ledger import checksum, discover_migrations
from worker.domain.errors import ConfigError
from worker.settings import REPO_ROOT, Settings
from worker.sql import parse_blocks, queries

SQL_FILES = ["ledger.sql", "migrate.sql", "spark.sql", "operator.sql", "operations.sql"]
ADAPTERS = REPO_ROOT / "worker" / "adapters"


def referenced(source: str, pattern: str) -> set[str]:
    """Block names the adapter code looks up, e.g. ``self._q["claim_files"]``."""
    return set(re.findall(pattern, (ADAPTERS / source).read_text(encoding="utf-8")))


# (file, adapter source, how the adapter indexes that file's blocks)
LOOKUPS = [
    ("ledger.sql", "pg_ledger.py", r'self\._q\["([a-z_0-9]+)"\]'),
    ("migrate.sql", "pg_ledger.py", r'(?<![._])\bq\["([a-z_0-9]+)"\]'),
    ("spark.sql", "spark_sink.py", r'self\._sql\["([a-z_0-9]+)"\]'),
    ("operator.sql", "pg_operator.py", r'self\._q\["([a-z_0-9]+)"\]'),
    ("ledger.sql", "pg_operator.py", r'self\._ledger_q\["([a-z_0-9]+)"\]'),
    ("operations.sql", "stats.py", r'self\._q\["([a-z_0-9]+)"\]'),
]


def without_literals(sql: str) -> str:
    """SQL with its single-quoted string literals (say the array literal '{}') removed."""
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


def format_fields(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


# --------------------------------------------------------------------------- parse_blocks


def test_parse_blocks_names_and_bodies() -> None:
    text = (
        "-- a header comment, not part of any block\n"
        "SELECT 'ignored';\n"
        "-- name: first\n"
        "-- what it does\n"
        "SELECT 1;\n"
        "\n"
        "--name:second_2\n"
        "SELECT 2\n"
        "  FROM t;\n"
        "--   name:   third   \n"
        "\n"
    )
    blocks = parse_blocks(text)
    assert list(blocks) == ["first", "second_2", "third"]
    assert blocks["first"] == "-- what it does\nSELECT 1;"
    assert blocks["second_2"] == "SELECT 2\n  FROM t;"
    assert blocks["third"] == ""


def test_parse_blocks_without_names() -> None:
    assert parse_blocks("SELECT 1;") == {}
    assert parse_blocks("") == {}


def test_parse_blocks_name_must_be_lower_case_and_own_line() -> None:
    text = "-- name: good\nSELECT 1; -- name: inline\n-- name: Bad\nSELECT 2;\n"
    blocks = parse_blocks(text)
    assert list(blocks) == ["good"]
    assert "-- name: Bad" in blocks["good"]
    assert "SELECT 2;" in blocks["good"]


def test_parse_blocks_duplicate_name() -> None:
    with pytest.raises(ValueError, match="duplicate SQL block name: twice"):
        parse_blocks("-- name: twice\nSELECT 1;\n-- name: other\nSELECT 2;\n-- name: twice\nSELECT 3;\n")


# --------------------------------------------------------------------------- the shipped files


@pytest.mark.parametrize("filename", SQL_FILES)
def test_every_block_loads_and_is_non_empty(filename: str) -> None:
    blocks = queries(filename)
    assert blocks
    for name, body in blocks.items():
        statement = "\n".join(line for line in body.splitlines() if not line.strip().startswith("--")).strip()
        assert statement, f"{filename}:{name} holds no statement"


@pytest.mark.parametrize(("filename", "source", "pattern"), LOOKUPS)
def test_every_block_the_code_uses_exists(filename: str, source: str, pattern: str) -> None:
    names = referenced(source, pattern)
    assert names, f"no lookups found in {source}: the pattern is stale"
    missing = names - set(queries(filename))
    assert not missing, f"{source} uses blocks missing from {filename}: {sorted(missing)}"


def test_known_blocks_exist() -> None:
    assert {"register_files", "claim_files", "commit_batch", "try_table_lock", "table_unlock"} <= set(
        queries("ledger.sql")
    )
    assert {"lock", "unlock", "create_history", "applied", "record"} <= set(queries("migrate.sql"))
    assert "create_table" in queries("spark.sql")


@pytest.mark.parametrize("filename", SQL_FILES)
def test_files_have_no_duplicate_names(filename: str) -> None:
    text = resources.files("worker.sql").joinpath(filename).read_text(encoding="utf-8")
    assert text.count("-- name:") == len(queries(filename))


@pytest.mark.parametrize("filename", ["ledger.sql", "migrate.sql"])
def test_no_format_braces_in_pg_statements(filename: str) -> None:
    """PostgreSQL statements take $n parameters, never Python formatting (braces may only appear
    inside SQL string literals, such as the empty array '{}')."""
    for name, body in queries(filename).items():
        code = without_literals(body)
        assert "{" not in code, f"{filename}:{name}"
        assert "}" not in code, f"{filename}:{name}"
        assert "%s" not in code, f"{filename}:{name}"


def test_without_literals() -> None:
    assert without_literals("SELECT '{}', 'it''s {x}', x FROM t") == "SELECT '', '', x FROM t"


def test_spark_templates_only_use_documented_fields() -> None:
    text = resources.files("worker.sql").joinpath("spark.sql").read_text(encoding="utf-8")
    header = text[: text.index("-- name:")]
    documented = set(re.findall(r"\{([a-z_]+)\}", header))
    assert {"table", "location"} <= documented
    blocks = queries("spark.sql")
    for name, body in blocks.items():
        assert format_fields(body) <= documented, name
    create = blocks["create_table"]
    assert {"table", "location"} <= format_fields(create)
    values = {field: "" for field in format_fields(create)}
    values.update(table="`glue`.`db`.`t`", location="s3://wh/db/t")
    sql = create.format(**values)
    assert sql.startswith("CREATE TABLE IF NOT EXISTS `glue`.`db`.`t` (")
    assert "LOCATION 's3://wh/db/t'" in sql
    assert "USING iceberg" in sql
    for column in ("_source_file", "_batch_id", "_ingested_at"):
        assert column in sql


def test_queries_is_cached() -> None:
    assert queries("ledger.sql") is queries("ledger.sql")


def test_unknown_sql_file() -> None:
    with pytest.raises(FileNotFoundError):
        queries("nope.sql")


# --------------------------------------------------------------------------- discover_migrations


def write(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"-- {name}\nSELECT 1;\n", encoding="utf-8")


def test_discover_in_order(tmp_path: Path) -> None:
    write(tmp_path, "0003_add_index.sql", "0001_create_ledger.sql", "0002_add_column.sql", "README.md")
    (tmp_path / "notes").mkdir()
    found = discover_migrations(tmp_path)
    assert [(v, n) for v, n, _ in found] == [
        (1, "0001_create_ledger"),
        (2, "0002_add_column"),
        (3, "0003_add_index"),
    ]
    assert found[1][2] == "-- 0002_add_column.sql\nSELECT 1;\n"


def test_discover_empty_folder(tmp_path: Path) -> None:
    assert discover_migrations(tmp_path) == []


def test_discover_gap(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "0003_c.sql")
    with pytest.raises(ConfigError, match=r"without gaps, found \[1, 3\]"):
        discover_migrations(tmp_path)


def test_discover_not_starting_at_one(tmp_path: Path) -> None:
    write(tmp_path, "0002_b.sql")
    with pytest.raises(ConfigError, match="without gaps"):
        discover_migrations(tmp_path)


def test_discover_duplicate_version(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "0001_b.sql")
    with pytest.raises(ConfigError, match=r"found \[1, 1\]"):
        discover_migrations(tmp_path)


@pytest.mark.parametrize("bad", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0001_sp ace.sql", "create.sql"])
def test_discover_bad_name(tmp_path: Path, bad: str) -> None:
    write(tmp_path, "0001_ok.sql", bad)
    with pytest.raises(ConfigError, match=r"NNNN_verb_noun\.sql") as info:
        discover_migrations(tmp_path)
    assert bad in str(info.value)


def test_discover_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ICEFEED_MIGRATIONS_DIR") as info:
        discover_migrations(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)


def test_real_migrations_folder() -> None:
    folder = REPO_ROOT / "migrations"
    assert Settings.model_fields["migrations_dir"].default == folder
    found = discover_migrations(folder)
    assert found, "the repository ships migrations"
    assert [v for v, _, _ in found] == list(range(1, len(found) + 1))
    assert found[0][1] == "0001_create_ledger"
    for _, name, sql in found:
        assert sql.strip(), name
    assert "CREATE TABLE" in found[0][2].upper()
    # the ledger statements refer to tables the first migration creates
    first = found[0][2]
    for table in ("files", "batches", "rejected_messages"):
        assert table in first


def test_checksum() -> None:
    assert checksum("SELECT 1;") == checksum("SELECT 1;")
    assert checksum("SELECT 1;") != checksum("SELECT 1; ")
    assert len(checksum("")) == 64
