"""Table maintenance owned by the fleet (docs/table-maintenance.md).

Per table, at most one worker maintains at a time (a lease in the ledger), and every commit it
makes to the table is made under the table's commit lock, with no fenced append of the table
still running: so a maintenance commit never races one of icefeed's appends. The steps are
short, so an append waits at most one step's commit:

- ``properties``: the table properties that bound old ``metadata.json`` files;
- ``expire``: snapshots past the policy (metadata only: no file is deleted);
- ``compact``: each group of small files is read and written as one file *outside* the lock,
  then swapped in under it (one commit, which fails and changes nothing if a source file is
  no longer live); every column, the lineage columns included, is copied as it is;
- ``orphans``: files nothing references, older than their safety age, are deleted. No lock: the
  age is what makes it safe (a write refers to its files only when it commits, and no write
  lasts that long), and a file the metadata references is never deleted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.domain import maintenance as decide
from worker.domain.errors import DataError, IcefeedError, TransientError
from worker.domain.maintenance import MaintenancePolicy
from worker.ports import MaintenanceLedger, TableMaintenance, TableState

log = structlog.get_logger("icefeed.maintenance")


@dataclass
class Report:
    """What one run did (or, dry, would do) to one table."""

    table: str
    outcome: str = "done"  # done | failed | skipped (not due, busy, no such table)
    reason: str = ""
    dry_run: bool = False
    stats: dict[str, int] | None = None
    plan: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    after: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "outcome": self.outcome,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "stats": self.stats,
            "plan": self.plan,
            "steps": self.steps,
            "after": self.after,
        }

    @property
    def longest_hold_s(self) -> float:
        return max((float(s.get("held_s", 0.0)) for s in self.steps), default=0.0)


class Maintainer:
    def __init__(
        self,
        ledger: MaintenanceLedger,
        tables: TableMaintenance,
        owner: str,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
        lease_ttl_s: int = 600,
    ) -> None:
        """``lease_ttl_s``: the maintenance lease (``ICEFEED_LEASE_MAINTENANCE_TTL_S``), renewed
        every third of it while a run lasts; a dead worker's tables come back after it."""
        self.lease_ttl_s = lease_ttl_s
        self.ledger = ledger
        self.tables = tables
        self.owner = owner
        self.metrics = metrics
        self.clock = clock

    # -- the side task ---------------------------------------------------------------------------

    async def loop(self, tables: Sequence[str], policy_for: Callable[[str], MaintenancePolicy]) -> None:
        """Check every table in turn, forever; a run that fails is logged and tried again when due.
        The first check comes one interval after the worker starts (with jitter), not at once."""
        enabled = [t for t in tables if policy_for(t).enabled]
        if not enabled:
            log.info("maintenance_disabled", reason="[maintenance] enabled = false for every table")
            await asyncio.Event().wait()
        pause = min(policy_for(t).check_interval_s for t in enabled)
        log.info("maintenance_started", tables=enabled, check_every_s=pause)
        while True:
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            for table in enabled:
                try:
                    await self.run(table, policy_for(table))
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - one table's trouble never stops the worker
                    log.error("maintenance_failed", table=table, error_class=type(error).__name__, error=str(error))

    # -- one run ---------------------------------------------------------------------------------

    async def run(self, table: str, policy: MaintenancePolicy, *, force: bool = False, dry_run: bool = False) -> Report:
        if dry_run:
            return await self._dry_run(table, policy)
        turn = await self.ledger.maintenance_take(
            table, self.owner, self.lease_ttl_s, 0.0 if force else float(policy.check_interval_s)
        )
        if turn is None:
            return Report(table, "skipped", "not due, or another worker maintains it now")
        report = Report(table)
        orphans_due = turn.orphans_checked_s_ago is None or turn.orphans_checked_s_ago >= policy.orphan_interval_s
        lease = _Lease(self.ledger, table, self.owner, self.lease_ttl_s)
        keeper = asyncio.create_task(lease.keep())
        error: str | None = None
        try:
            await self._steps(report, policy, lease, orphans_due or force)
        except DataError as exc:  # the table does not exist yet
            report.outcome, report.reason = "skipped", str(exc)
        except asyncio.CancelledError:  # the worker is stopping: the next run takes it from here
            report.outcome, report.reason = "skipped", "interrupted: the worker is stopping"
            raise
        except Exception as exc:
            report.outcome, error = "failed", f"{type(exc).__name__}: {exc}"
            report.reason = error
            raise
        finally:
            keeper.cancel()
            if any(s["outcome"] == "failed" for s in report.steps) and report.outcome == "done":
                report.outcome = "failed"
                error = "; ".join(
                    f"{s['step']}: {s.get('error', '')}" for s in report.steps if s["outcome"] == "failed"
                )
                report.reason = error
            orphans_checked = any(s["step"] == "orphans" and s["outcome"] == "done" for s in report.steps)
            await asyncio.shield(
                self.ledger.maintenance_finish(
                    table,
                    self.owner,
                    report.outcome,
                    error,
                    report.after or report.stats,
                    orphans_checked,
                    report.steps,
                )
            )
            if self.metrics is not None and report.outcome == "done":
                self.metrics.maintenance_last_success.labels(table).set(self.clock())
            log.info(
                "maintenance_finished",
                table=table,
                outcome=report.outcome,
                reason=report.reason,
                longest_hold_s=round(report.longest_hold_s, 3),
                **(report.after or report.stats or {}),
            )
        return report

    async def _dry_run(self, table: str, policy: MaintenancePolicy) -> Report:
        report = Report(table, dry_run=True)
        try:
            state = await asyncio.to_thread(self.tables.state, table)
        except DataError as exc:
            report.outcome, report.reason = "skipped", str(exc)
            return report
        report.stats = self._stats(state, policy)
        report.plan = decide.plan(
            state.snapshots, state.keep, state.files, state.properties, policy, int(self.clock() * 1000)
        ).as_dict()
        return report

    def _stats(self, state: TableState, policy: MaintenancePolicy) -> dict[str, int]:
        figures = decide.stats(
            len(state.snapshots), state.files, state.manifests, state.metadata_bytes, policy
        ).as_dict()
        figures["data_files"] += state.other_files
        if self.metrics is not None:
            self.metrics.table_stats(state.table, figures)
        return figures

    async def _steps(self, report: Report, policy: MaintenancePolicy, lease: _Lease, orphans_due: bool) -> None:
        table = report.table
        try:
            state = await asyncio.to_thread(self.tables.state, table)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - the catalog or storage is away: a failed run, counted
            self._record(
                report, {"step": "inspect", "outcome": "failed", "held_s": 0.0, "lock_wait_s": 0.0, "error": _text(exc)}
            )
            return
        report.stats = self._stats(state, policy)
        now_ms = int(self.clock() * 1000)
        plan = decide.plan(state.snapshots, state.keep, state.files, state.properties, policy, now_ms)
        report.plan = plan.as_dict()
        changed = False
        if plan.properties:
            step, _ = await self._locked(
                report, "properties", policy, lease, lambda: self.tables.set_properties(table, plan.properties)
            )
            changed |= step["outcome"] == "done"
        if plan.expire:
            step, _ = await self._locked(
                report,
                "expire",
                policy,
                lease,
                lambda: self.tables.expire(table, policy, now_ms),
                describe=lambda n: {"expired": n},
            )
            changed |= step["outcome"] == "done"
        for group in plan.bins:
            if not lease.held:
                break
            changed |= await self._compact(report, state, group, policy, lease)
        if orphans_due and lease.held:
            await self._orphans(report, policy, lease)
        if changed:
            report.after = self._stats(await asyncio.to_thread(self.tables.state, table), policy)

    async def _compact(
        self, report: Report, state: TableState, group: list[decide.DataFile], policy: MaintenancePolicy, lease: _Lease
    ) -> bool:
        paths = [f.path for f in group]
        details = {
            "files_in": len(paths),
            "bytes_in": sum(f.size_bytes for f in group),
            "records": sum(f.records for f in group),
        }
        try:
            staged = await asyncio.to_thread(self.tables.stage, state, paths, policy)
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
            self._record(
                report,
                {
                    "step": "compact",
                    "outcome": "failed",
                    "held_s": 0.0,
                    "lock_wait_s": 0.0,
                    **details,
                    "error": _text(exc),
                },
            )
            return False
        swap = self.tables.replace

        def outcome(swapped: object) -> dict[str, Any]:
            if swapped:
                return {"files_out": 1, "bytes_out": staged.size_bytes}
            return {"outcome": "skipped", "reason": "a source file is no longer live"}

        step, _ = await self._locked(
            report, "compact", policy, lease, lambda: swap(state, paths, staged), details=details, describe=outcome
        )
        if step["outcome"] == "done":
            return True
        if step["outcome"] == "skipped":  # the swap was refused or never tried: nothing refers to the file
            await asyncio.to_thread(self.tables.delete, report.table, [staged.path])
        return False

    async def _orphans(self, report: Report, policy: MaintenancePolicy, lease: _Lease) -> None:
        """Only once the table's writer slot is free: then no append that began before now can
        still commit (a released batch's engine work was stopped, or outlived the engine's limit),
        and every write that begins later produces files younger than the safety age."""
        table = report.table
        quiet, _ = await self._locked(report, "orphans", policy, lease, lambda: None, record=False)
        if quiet["outcome"] != "done":
            self._record(report, quiet)
            return
        started = time.monotonic()
        try:
            listed = await asyncio.to_thread(self.tables.listing, table)
            referenced = await asyncio.to_thread(self.tables.referenced, table, lambda: not lease.held)
            cutoff = int(self.clock() * 1000) - policy.orphan_min_age_s * 1000
            chosen = decide.orphans(listed, referenced, cutoff)
            if not lease.held:
                raise TransientError("the maintenance lease was lost", error_class="LeaseLost")
            deleted = await asyncio.to_thread(self.tables.delete, table, [f.path for f in chosen])
            step = {
                "step": "orphans",
                "outcome": "done",
                "held_s": quiet["held_s"],
                "lock_wait_s": quiet["lock_wait_s"],
                "listed": len(listed),
                "deleted": deleted,
                "bytes_deleted": sum(f.size_bytes for f in chosen),
                "seconds": round(time.monotonic() - started, 3),
            }
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
            step = {"step": "orphans", "outcome": "failed", "held_s": 0.0, "lock_wait_s": 0.0, "error": _text(exc)}
        self._record(report, step)

    async def _locked(
        self,
        report: Report,
        name: str,
        policy: MaintenancePolicy,
        lease: _Lease,
        commit: Callable[[], object],
        details: dict[str, Any] | None = None,
        describe: Callable[[object], dict[str, Any]] | None = None,
        record: bool = True,
    ) -> tuple[dict[str, Any], object]:
        """One commit under the table's commit lock, skipped while a fenced append may still run;
        the step (``describe`` adds to it from the commit's result) and that result."""
        step: dict[str, Any] = {"step": name, **(details or {}), "held_s": 0.0, "lock_wait_s": 0.0}
        result: object = None
        asked = time.monotonic()
        try:
            async with self.ledger.table_lock(report.table, policy.max_lock_wait_s) as lock:
                held_from = time.monotonic()
                step["lock_wait_s"] = round(held_from - asked, 3)
                try:
                    if not lease.held:
                        step.update(outcome="skipped", reason="the maintenance lease was lost")
                    elif await lock.writer_busy(report.table):  # answered on the lock's connection: still held
                        step.update(outcome="skipped", reason="an append of the table may still be running")
                    else:
                        result = await asyncio.to_thread(commit)
                        step["outcome"] = "done"
                        step.update(describe(result) if describe else {})
                finally:
                    step["held_s"] = round(time.monotonic() - held_from, 3)
                    if self.metrics is not None:
                        self.metrics.maintenance_lock_hold.labels(name).observe(step["held_s"])
        except TransientError as exc:
            if exc.error_class == "TableBusy":
                step.update(outcome="skipped", reason=f"the table lock stayed busy for {policy.max_lock_wait_s:g} s")
            else:
                step.update(outcome="failed", error=_text(exc))
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
            step.update(outcome="failed", error=_text(exc))
        if record:
            self._record(report, step)
        return step, result

    def _record(self, report: Report, step: dict[str, Any]) -> None:
        report.steps.append(step)
        if self.metrics is not None:
            self.metrics.maintenance_runs.labels(report.table, step["step"], step["outcome"]).inc()
        fields = {k: v for k, v in step.items() if k != "step"}
        level = log.warning if step["outcome"] == "failed" else log.info
        level("maintenance_step", table=report.table, step=step["step"], **fields)


class _Lease:
    """Renews the maintenance lease while a run lasts; ``held`` turns False once it is lost."""

    def __init__(self, ledger: MaintenanceLedger, table: str, owner: str, ttl_s: int) -> None:
        self.ledger, self.table, self.owner, self.ttl_s = ledger, table, owner, ttl_s
        self.held = True

    async def keep(self) -> None:
        while self.held:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                self.held = await self.ledger.maintenance_extend(self.table, self.owner, self.ttl_s)
            except IcefeedError:
                continue  # the database is away: the next renewal may still be in time
            if not self.held:
                log.warning("maintenance_lease_lost", table=self.table)


def _text(exc: BaseException) -> str:
    return f"{getattr(exc, 'error_class', type(exc).__name__)}: {exc}"
