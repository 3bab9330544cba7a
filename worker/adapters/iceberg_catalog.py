"""The Iceberg catalog through pyiceberg (``ICEFEED_ICEBERG_CATALOG``), for what the SQL engine
cannot do: changing a column's type on approval (table_admin.py) and table maintenance
(iceberg_maintenance.py)."""

from __future__ import annotations

import threading
from typing import Any

from worker.domain.errors import ConfigError
from worker.settings import IcebergSettings


class IcebergCatalog:
    """The catalog, loaded once; ``needed_for`` and ``otherwise`` complete the error when it is
    not configured."""

    def __init__(self, settings: IcebergSettings, needed_for: str, otherwise: str) -> None:
        if not settings.catalog:
            raise ConfigError(
                f"ICEFEED_ICEBERG_CATALOG is not set: {needed_for} needs the Iceberg catalog "
                f'(e.g. {{"type": "glue", "glue.region": "eu-west-1"}}); {otherwise}'
            )
        self._props = dict(settings.catalog)
        self._catalog: Any = None
        self._lock = threading.Lock()

    def table(self, table: str) -> Any:
        """A pyiceberg Table for ``catalog.database.table`` (the catalog name is the routes' own)."""
        from pyiceberg.catalog import load_catalog

        with self._lock:
            if self._catalog is None:
                self._catalog = load_catalog("icefeed", **self._props)
            catalog = self._catalog
        return catalog.load_table(".".join(table.split(".")[1:]))
