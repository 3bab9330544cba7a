"""Table maintenance through the Iceberg catalog with pyiceberg: works for a table any engine
writes (Sail has no maintenance procedures), given ``ICEFEED_ICEBERG_CATALOG``.

Every method is blocking (call it in a thread). The decisions are the domain's
(worker/domain/maintenance.py); this adapter reads the table's state and applies them. Commits
here are optimistic (the catalog's own check): a commit that lost a race fails and changes nothing.
No method deletes a file that the table's metadata references; only ``delete`` removes objects,
and it is given the orphans the domain chose (older than their safety age)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from worker.adapters.iceberg_catalog import IcebergCatalog
from worker.domain.errors import DataError, TransientError
from worker.domain.maintenance import DataFile, MaintenancePolicy, Snapshot, StoredFile, expirable, normalized
from worker.ports import Staged, TableState
from worker.settings import IcebergSettings

#: Decoded bytes buffered before a row group is written (and the most a compaction holds).
ROW_GROUP_BYTES = 64 * 1024 * 1024


class IcebergMaintainer:
    def __init__(self, settings: IcebergSettings) -> None:
        self._catalog = IcebergCatalog(settings, "table maintenance", "or set [maintenance] enabled = false")

    # -- reading ---------------------------------------------------------------------------------

    def _load(self, table: str) -> Any:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self._catalog.table(table)
        except NoSuchTableError:
            raise DataError(f"table {table} does not exist (yet)", error_class="NoSuchTable") from None

    def state(self, table: str) -> TableState:
        from pyiceberg.table.refs import SnapshotRefType

        t = self._load(table)
        md = t.metadata
        current = md.current_snapshot()
        files: list[DataFile] = []
        raw: dict[str, Any] = {}
        with_deletes = 0
        manifests = 0
        # Compaction here writes one unpartitioned file per group: a partitioned table's files
        # (tables icefeed creates are not partitioned) are counted, never compacted.
        partitioned = not md.spec().is_unpartitioned()
        if current is not None:
            manifests = len(current.manifests(t.io))
            for task in t.scan().plan_files():
                if task.delete_files or partitioned:
                    with_deletes += 1
                    continue
                df = task.file
                files.append(DataFile(df.file_path, int(df.file_size_in_bytes), int(df.record_count)))
                raw[df.file_path] = df
        keep = {
            ref.snapshot_id
            for ref in md.refs.values()
            if ref.snapshot_ref_type in (SnapshotRefType.BRANCH, SnapshotRefType.TAG)
        }
        if current is not None:
            keep.add(current.snapshot_id)
        return TableState(
            table=table,
            location=md.location.rstrip("/"),
            snapshots=[Snapshot(s.snapshot_id, s.timestamp_ms) for s in md.snapshots],
            keep=keep,
            files=files,
            other_files=with_deletes,
            manifests=manifests,
            metadata_bytes=len(t.io.new_input(t.metadata_location)),
            properties=dict(md.properties),
            raw=raw,
        )

    # -- commits (each called under the table's commit lock) --------------------------------------

    def set_properties(self, table: str, properties: dict[str, str]) -> None:
        t = self._load(table)
        with t.transaction() as tx:
            tx.set_properties(properties)

    def expire(self, table: str, policy: MaintenancePolicy, now_ms: int) -> int:
        """Expire what the policy allows on the table as it is now; the number expired."""
        from pyiceberg.table.refs import SnapshotRefType

        t = self._load(table)
        md = t.metadata
        keep = {
            ref.snapshot_id
            for ref in md.refs.values()
            if ref.snapshot_ref_type in (SnapshotRefType.BRANCH, SnapshotRefType.TAG)
        }
        ids = expirable([Snapshot(s.snapshot_id, s.timestamp_ms) for s in md.snapshots], keep, policy, now_ms)
        if ids:
            t.maintenance.expire_snapshots().by_ids(ids).commit()
        return len(ids)

    def stage(self, state: TableState, paths: list[str], policy: MaintenancePolicy) -> Staged:
        """Read ``paths`` (one at a time, streaming) and write them as one Parquet file in the
        table's data location. Every column is kept as it is, the lineage columns included."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan, parquet_file_to_data_file, schema_to_pyarrow
        from pyiceberg.table import FileScanTask
        from pyiceberg.table.locations import load_location_provider

        t = self._load(state.table)
        md = t.metadata
        schema = schema_to_pyarrow(md.schema(), include_field_ids=True)
        provider = load_location_provider(md.location, md.properties)
        path = provider.new_data_location(f"icefeed-compact-{uuid.uuid4().hex}.parquet")
        scan = ArrowScan(md, t.io, md.schema(), AlwaysTrue(), True)
        expected = 0
        pending: list[pa.Table] = []

        def flush(writer: pq.ParquetWriter) -> None:
            if pending:
                rows = pa.concat_tables(pending)
                writer.write_table(rows, row_group_size=max(1, rows.num_rows))
                pending.clear()

        with (
            # A new, unique name: no existence check first (a HeadObject that S3 answers with 403
            # rather than 404 to a role that may not list the bucket).
            t.io.new_output(path).create(overwrite=True) as out,
            pq.ParquetWriter(out, schema, compression="zstd") as writer,
        ):
            for p in paths:
                df = state.raw[p]
                expected += int(df.record_count)
                for batch in scan.to_record_batches([FileScanTask(df)]):
                    pending.append(pa.Table.from_batches([batch]).cast(schema))
                    # Row groups of up to ROW_GROUP_BYTES (decoded): a few large ones, not one
                    # per source file; the buffer bounds what a compaction holds in memory.
                    if sum(x.nbytes for x in pending) >= ROW_GROUP_BYTES:
                        flush(writer)
            flush(writer)
        data_file = parquet_file_to_data_file(t.io, md, path)
        staged = Staged(path, int(data_file.record_count), int(data_file.file_size_in_bytes), data_file)
        if staged.records != expected:  # never replace files by one that holds other rows
            t.io.delete(path)
            raise TransientError(
                f"compaction of {len(paths)} files of {state.table} wrote {staged.records} rows, expected {expected}",
                error_class="CompactionMismatch",
            )
        return staged

    def replace(self, state: TableState, paths: list[str], staged: Staged) -> bool:
        """Swap ``paths`` for the staged file in one commit; False (nothing changed) when one of
        them is no longer live (a replace or an audit deleted rows meanwhile)."""
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        t = self._load(state.table)
        try:
            with t.transaction() as tx, tx.update_snapshot().overwrite() as overwrite:
                _prune_dead_manifests(overwrite)
                for p in paths:
                    overwrite.delete_data_file(state.raw[p])
                overwrite.append_data_file(staged.data_file)
        except ValidationException:
            return False
        except CommitFailedException as exc:
            raise TransientError(
                f"compaction commit of {state.table} lost a race: {exc}", error_class="CommitConflict"
            ) from None
        return True

    # -- orphans (no commit: only files nothing references, older than their safety age) ----------

    def listing(self, table: str) -> list[StoredFile]:
        """The objects under the table's ``data/`` and ``metadata/`` prefixes."""
        from pyarrow import fs as pafs

        t = self._load(table)
        out: list[StoredFile] = []
        scheme, rest = t.metadata.location.rstrip("/").split("://", 1)
        filesystem = t.io.fs_by_scheme(scheme, rest.split("/", 1)[0])
        for sub in ("data", "metadata"):
            selector = pafs.FileSelector(f"{rest}/{sub}", recursive=True, allow_not_found=True)
            for info in filesystem.get_file_info(selector):
                if info.type != pafs.FileType.File:
                    continue
                modified = info.mtime or datetime.now(UTC)
                out.append(StoredFile(f"{scheme}://{info.path}", int(info.size or 0), int(modified.timestamp() * 1000)))
        return out

    def referenced(self, table: str, cancelled: Callable[[], bool] = lambda: False) -> set[str]:
        """Every file the table's metadata references (all snapshots; deleted entries too, to err on
        the side of keeping)."""
        t = self._load(table)
        md = t.metadata
        # version-hint.text names the current metadata for readers that find tables by path.
        refs = {t.metadata_location, f"{md.location.rstrip('/')}/metadata/version-hint.text"}
        refs.update(e.metadata_file for e in md.metadata_log)
        refs.update(s.statistics_path for s in md.statistics)
        refs.update(s.statistics_path for s in md.partition_statistics)
        seen: set[str] = set()
        for snapshot in md.snapshots:
            refs.add(snapshot.manifest_list)
            for manifest in snapshot.manifests(t.io):
                if manifest.manifest_path in seen:
                    continue
                if cancelled():
                    raise TransientError("orphan scan cancelled", error_class="Cancelled")
                seen.add(manifest.manifest_path)
                refs.add(manifest.manifest_path)
                refs.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(t.io, discard_deleted=False))
        return normalized(refs)

    def delete(self, table: str, paths: list[str]) -> int:
        io = self._load(table).io
        for p in paths:
            io.delete(p)
        return len(paths)


def _prune_dead_manifests(producer: Any) -> None:
    """Leave out of the new snapshot the manifests that list no live file: those holding only
    DELETED entries of an earlier snapshot (each compaction writes one; the engine's appends carry
    them on). Iceberg's Java writers drop them the same way; pyiceberg 0.12 keeps them, so without
    this every compaction would leave one more manifest for planning to read."""
    own = producer._snapshot_id
    keep_all = producer._process_manifests

    def process(manifests: list[Any]) -> list[Any]:
        live = [m for m in manifests if m.added_snapshot_id == own or m.has_added_files() or m.has_existing_files()]
        return list(keep_all(live))

    producer._process_manifests = process
