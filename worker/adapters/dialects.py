"""What differs between the engines and table formats icefeed writes through, in ONE place.

A ``Dialect`` is chosen from the settings (``ICEFEED_SPARK_DIALECT`` = spark | sail,
``ICEFEED_SPARK_TABLE_FORMAT`` = iceberg | parquet) and answers, for the sink and the pipeline:

==================== ======================== ======================== ========================
                     sail + iceberg           spark + parquet          spark + iceberg
==================== ======================== ======================== ========================
tested here          tests/integration, chaos tests/spark4 (Spark 4.0) NO: no Iceberg runtime
                                                                       for Spark 4 without Maven
create table         USING iceberg LOCATION   USING parquet LOCATION   USING iceberg LOCATION
new columns          mergeSchema on append    ALTER TABLE ADD COLUMNS, mergeSchema on append,
                     (one commit)             then append              after SET TBLPROPERTIES
                                                                       write.spark.accept-any-
                                                                       schema=true (Iceberg docs)
nested field added,  mergeSchema              refused: DataError       mergeSchema
widening                                      UnsupportedSchemaChange
append               writeTo().append()       write.mode(append)       writeTo().append()
                                              .saveAsTable (writeTo
                                              rejects v1 tables)
on_overwrite=replace DELETE (Iceberg)         refused at start         DELETE (needs Iceberg's
                                              (ConfigError)            SQL extensions)
whole-file JSON      parsed by the worker     engine (multiLine)       engine (multiLine)
object path          percent-encoded key      raw key, glob characters raw key, glob characters
                                              backslash-escaped        backslash-escaped
bad JSON/CSV line    read fails (Sail)        mode=FAILFAST            mode=FAILFAST
read-your-table      as is                    REFRESH first            REFRESH first (Iceberg's
                                                                       catalog cache)
==================== ======================== ======================== ========================

Measured on Apache Spark 4.0.1 Connect (tests/spark4): Hadoop ``Path`` takes the key literally
(``%20`` stays ``%20``) but globs ``* ? [ ] { } \\`` (a raw ``star*.json`` also read
``starX.json``); PERMISSIVE JSON turns a bad line into a ``_corrupt_record`` column; another
session's append or ALTER stays invisible to a long-lived session until ``REFRESH TABLE`` (a
recovery probe would see no rows and load the files again); ``_metadata.file_path`` exists but
is URI-encoded (``file:/…/a%20b.json``), so lineage stays the literal ``s3://bucket/key``.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from worker.domain.errors import ConfigError, DataError
from worker.domain.policy import BatchPlan
from worker.domain.reading import deletes_rows, worker_parses_whole_file_json
from worker.domain.schema import ChangeKind, Field, Struct, to_ddl
from worker.routes import Routes
from worker.settings import SparkSettings
from worker.sql import queries

Engine = Literal["spark", "sail"]
TableFormat = Literal["iceberg", "parquet"]

# Characters Hadoop's globber interprets in a path (org.apache.hadoop.fs.GlobPattern); a
# backslash before each makes it literal.
_HADOOP_GLOB = re.compile(r"([\\{}\[\]*?])")


def read_path(bucket: str, key: str) -> str:
    """The URI Sail reads one object from. Sail interprets paths (globs, ``?``, ``%``), so the
    decoded key is percent-encoded, never concatenated raw."""
    return f"s3://{bucket}/{urllib.parse.quote(key, safe='/')}"


def hadoop_escape(key: str) -> str:
    """A key as Apache Spark (Hadoop ``Path``) reads it literally: raw, glob characters escaped.
    Hadoop cannot read every key: ``:`` in a path segment, ``//`` and ``.``/``..`` segments are
    rewritten or rejected by ``Path`` itself."""
    return _HADOOP_GLOB.sub(r"\\\1", key)


@dataclass(frozen=True, slots=True)
class Dialect:
    engine: Engine = "spark"
    table_format: TableFormat = "iceberg"
    source_root: str = ""  # test-only: read objects from <root>/<bucket>/<key> instead of S3

    # -- reading ------------------------------------------------------------------------------

    @property
    def parses_whole_file_json(self) -> bool:
        """Whether whole-file JSON (multiLine) must be fetched and parsed by the worker (Sail's
        reader knows only JSON lines)."""
        return worker_parses_whole_file_json(self.engine)

    @property
    def has_file_metadata(self) -> bool:
        """Whether the engine has ``_metadata.file_path`` (Apache Spark; not Sail). icefeed does
        not use it: ``_source_file`` is a literal per file, identical on every engine."""
        return self.engine == "spark"

    def source_path(self, bucket: str, key: str) -> str:
        """The path the engine reads one object from."""
        if self.engine == "sail":
            base = f"{self.source_root}/{bucket}" if self.source_root else f"s3://{bucket}"
            return f"{base}/{urllib.parse.quote(key, safe='/')}"
        base = f"{self.source_root}/{bucket}" if self.source_root else f"s3://{bucket}"
        return f"{base}/{hadoop_escape(key)}"

    def read_options(self, fmt: str, options: dict[str, str]) -> dict[str, str]:
        """Reader options: on Spark a malformed JSON/CSV record fails the read (as on Sail)
        instead of becoming nulls plus a ``_corrupt_record`` column."""
        if self.engine == "spark" and fmt in ("json", "csv"):
            return {"mode": "FAILFAST", **options}
        return dict(options)

    def refresh(self, spark: Any, table: str) -> None:
        """Make the session see other sessions' commits and schema changes before reading."""
        if self.engine == "spark":
            spark.catalog.refreshTable(table)

    # -- tables ----------------------------------------------------------------------------------

    @property
    def create_block(self) -> str:
        """The spark.sql block that creates a table."""
        return "create_table" if self.table_format == "iceberg" else "create_parquet_table"

    @property
    def supports_delete(self) -> bool:
        return deletes_rows(self.table_format)

    def evolution_statements(self, table_sql: str, plan: BatchPlan) -> list[str]:
        """Statements to run before appending a batch that changes an existing table's schema.

        ``table_sql`` is the quoted table name. Iceberg evolves in the append itself
        (mergeSchema); a Parquet table only gains new top-level columns, by ALTER TABLE."""
        changes = plan.table_changes
        if not changes:
            return []
        sql = queries("spark.sql")
        if self.table_format == "iceberg":
            # Sail merges on its own; Apache Spark + Iceberg ignores mergeSchema unless the table
            # accepts any schema (idempotent; covers tables created before this setting).
            return [] if self.engine == "sail" else [sql["accept_any_schema"].format(table=table_sql)]
        unsupported = [c for c in changes if c.kind is not ChangeKind.COLUMN_ADDED]
        if unsupported:
            raise DataError(
                "a parquet table can only gain new top-level columns (ALTER TABLE ADD COLUMNS), not: "
                + "; ".join(str(c) for c in unsupported)
                + " (use ICEFEED_SPARK_TABLE_FORMAT=iceberg)",
                error_class="UnsupportedSchemaChange",
            )
        before = plan.table or Struct(())
        added = Struct(tuple(Field(f.name, f.type, True) for f in plan.target.fields if before.field(f.name) is None))
        return [sql["add_columns"].format(table=table_sql, columns=to_ddl(added))]

    def append(self, df: Any, table: str) -> None:
        """Append a batch's rows in one job: one Iceberg commit, or one Parquet write job."""
        if self.table_format == "iceberg":
            df.writeTo(table).option("mergeSchema", "true").append()
        else:  # writeTo() rejects v1 tables ("Cannot write into v1 table"); by name, like writeTo
            df.write.mode("append").format("parquet").saveAsTable(table)

    # -- configuration ---------------------------------------------------------------------------

    def check_routes(self, routes: Routes) -> None:
        """Refuse, at start, routes this table format cannot serve."""
        if self.supports_delete:
            return
        replacing = [i.name for i in routes.ingestion if i.on_overwrite == "replace"]
        if replacing:
            raise ConfigError(
                f'ingestion(s) {", ".join(replacing)}: on_overwrite = "replace" deletes rows, which '
                f'ICEFEED_SPARK_TABLE_FORMAT={self.table_format} cannot do; use iceberg, or on_overwrite = "append"'
            )


def dialect_for(settings: SparkSettings) -> Dialect:
    return Dialect(settings.dialect, settings.table_format, settings.source_root)
