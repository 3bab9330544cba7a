"""Table operations the SQL engine cannot do, through the Iceberg catalog (pyiceberg).

Changing a column to string is not a legal Iceberg promotion, so it is done as legal steps, each
idempotent, under the table's commit lock: rename the column aside, add the column as string,
copy the values over with one UPDATE (Spark: nested values become JSON text), drop the old one.
Re-running after a crash continues where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.adapters.iceberg_catalog import IcebergCatalog
from worker.domain.errors import ConfigError
from worker.settings import IcebergSettings
from worker.sql import queries

Run = Callable[[str], None]


def aside(column: str) -> str:
    return f"{column}__icefeed_before_string"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class TableAdmin:
    def __init__(self, settings: IcebergSettings) -> None:
        self._catalog = IcebergCatalog(settings, "changing a column's type", "use --rescue instead")

    def _table(self, table: str) -> Any:
        return self._catalog.table(table)

    def widen_to_string(self, table: str, column: str, run_sql: Run) -> bool:
        """Make top-level ``column`` a string column; False if it already is one."""
        from pyiceberg.types import ListType, MapType, StringType, StructType

        def fields() -> dict[str, Any]:
            return {f.name: f.field_type for f in self._table(table).schema().fields}

        old = aside(column)
        current = fields()
        if column not in current and old not in current:
            raise ConfigError(f"{table} has no column {column!r}")
        if isinstance(current.get(column), StringType) and old not in current:
            return False
        if old not in current:
            with self._table(table).update_schema() as update:
                update.rename_column(column, old)
            current = fields()
        if column not in current:
            with self._table(table).update_schema() as update:
                update.add_column(column, StringType(), doc="changed to string by icefeed (operator approval)")
            current = fields()
        nested = isinstance(current[old], StructType | ListType | MapType)
        value = f"to_json({_quote(old)})" if nested else f"CAST({_quote(old)} AS STRING)"
        run_sql(
            queries("spark.sql")["copy_column"].format(
                table=".".join(_quote(p) for p in table.split(".")),
                target=_quote(column),
                source=_quote(old),
                value=value,
            )
        )
        with self._table(table).update_schema() as update:
            update.delete_column(old)
        return True
