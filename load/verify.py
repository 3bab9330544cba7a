"""Correctness, checked independently of the engine that wrote the table: pyiceberg reads the
table (rows per ``_source_file``, row ids) and the harness compares it with what it staged and
with the ledger's per-file row counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from load.data import BAD, StagedFile
from worker.localstack import iceberg_catalog


@dataclass
class TableView:
    rows_by_file: Counter[str] = field(default_factory=Counter)
    total_rows: int = 0
    distinct_ids: int = 0
    snapshots: list[dict[str, Any]] = field(default_factory=list)


def read_table(moto_url: str, identifier: str) -> TableView:
    import pyarrow.compute as pc

    table = iceberg_catalog(moto_url).load_table(identifier)
    view = TableView()
    arrow = table.scan(selected_fields=("_source_file", "id")).to_arrow()
    view.total_rows = arrow.num_rows
    if arrow.num_rows:
        grouped = arrow.group_by("_source_file").aggregate([("id", "count")])
        for source, count in zip(
            grouped.column("_source_file").to_pylist(), grouped.column("id_count").to_pylist(), strict=True
        ):
            view.rows_by_file[str(source)] = int(count)
        view.distinct_ids = int(pc.count_distinct(arrow.column("id")).as_py())
    for snap in table.snapshots():
        summary = snap.summary
        props: dict[str, str] = dict(summary.additional_properties) if summary is not None else {}
        view.snapshots.append(
            {
                "snapshot_id": snap.snapshot_id,
                "timestamp_ms": snap.timestamp_ms,
                "operation": str(summary.operation.value) if summary is not None else None,
                "added_data_files": int(props.get("added-data-files", 0)),
                "added_records": int(props.get("added-records", 0)),
            }
        )
    return view


def check(staged: list[StagedFile], view: TableView, ledger_files: list[dict[str, Any]]) -> dict[str, Any]:
    """lost_files: staged good files with no rows in the table; short_files: fewer rows than
    staged; duplicated_rows: rows beyond each file's count (plus repeated row ids); stray_rows:
    rows of files never staged; ledger_mismatches: LOADED files whose ledger row count is not
    the table's."""
    expected = {f.source_file: f for f in staged}
    lost: list[str] = []
    short: list[str] = []
    duplicated = 0
    bad_with_rows = 0
    for source, f in expected.items():
        got = view.rows_by_file.get(source, 0)
        if f.kind == BAD:
            if got:
                bad_with_rows += 1
            duplicated += max(0, got - f.rows)
            continue
        if got == 0:
            lost.append(f.key)
        elif got < f.rows:
            short.append(f.key)
        duplicated += max(0, got - f.rows)
    duplicated = max(duplicated, view.total_rows - view.distinct_ids)
    stray = sum(n for source, n in view.rows_by_file.items() if source not in expected)
    by_key = {row["key"]: row for row in ledger_files}
    mismatches = []
    statuses: Counter[str] = Counter()
    for f in staged:
        row = by_key.get(f.key)
        statuses[row["status"] if row else "MISSING"] += 1
        table_rows = view.rows_by_file.get(f.source_file, 0)
        if row and row["status"] == "LOADED" and int(row["rows_loaded"] or 0) != table_rows:
            mismatches.append(f.key)
    return {
        "staged_files": len(staged),
        "staged_rows": sum(f.rows for f in staged if f.kind != BAD),
        "table_rows": view.total_rows,
        "lost_files": len(lost),
        "short_files": len(short),
        "duplicated_rows": duplicated,
        "stray_rows": stray,
        "bad_files": sum(1 for f in staged if f.kind == BAD),
        "bad_files_with_rows": bad_with_rows,
        "ledger_mismatches": len(mismatches),
        "ledger_statuses": dict(sorted(statuses.items())),
        "examples": {"lost": lost[:5], "short": short[:5], "ledger_mismatch": mismatches[:5]},
    }
