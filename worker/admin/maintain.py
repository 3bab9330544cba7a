"""``icefeed maintain``: run table maintenance once, now (or, ``--dry-run``, show what it would do)."""

from __future__ import annotations

import os
import socket
from typing import Any

from worker.adapters.iceberg_maintenance import IcebergMaintainer
from worker.adapters.pg_operator import operator_ledger
from worker.domain.errors import ConfigError
from worker.faults import Faults, install_tables
from worker.maintenance import Maintainer
from worker.observability.logging import Redactor, settings_secrets
from worker.routes import Routes
from worker.settings import Settings


async def maintain(settings: Settings, routes: Routes, table: str | None, dry_run: bool) -> dict[str, Any]:
    """Every table of the routes with maintenance enabled, or the one named (even if disabled):
    due or not, unless another worker maintains it right now (its lease is respected)."""
    if table is not None and table not in routes.tables:
        raise ConfigError(f"--table {table}: not a table of the routes file (tables: {', '.join(routes.tables)})")
    names = [table] if table is not None else [t for t in routes.tables if routes.maintenance.policy(t).enabled]
    tables = install_tables(IcebergMaintainer(settings.iceberg), Faults(settings.faults))
    owner = f"icefeed-maintain@{socket.gethostname()}:{os.getpid()}"
    reports = []
    async with operator_ledger(settings.pg) as db:
        scrub = Redactor(settings_secrets(settings)).scrub  # errors stored in the ledger: no secret
        maintainer = Maintainer(db.worker_ledger(scrub), tables, owner, lease_ttl_s=settings.lease.maintenance_ttl_s)
        for name in names:
            report = await maintainer.run(name, routes.maintenance.policy(name), force=True, dry_run=dry_run)
            reports.append(report.as_dict())
    attention = [
        f"{r['table']}: maintenance {r['outcome']}: {r['reason']}" for r in reports if r["outcome"] == "failed"
    ]
    attention += [
        f"{r['table']}: skipped: {r['reason']}"
        for r in reports
        if r["outcome"] == "skipped" and "another worker" in r["reason"]
    ]
    disabled = [t for t in routes.tables if not routes.maintenance.policy(t).enabled and t not in names]
    return {"dry_run": dry_run, "tables": reports, "disabled": disabled, "attention": attention}
