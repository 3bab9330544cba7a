"""Schema policies: given the table's schema and each file's inferred schema, decide per file
whether it loads (and how) or is quarantined, and what the table becomes. Pure.

- ``evolve``: compatible changes (new columns, new nested fields, legal widenings) are applied
  to the table in the same commit; a file with a breaking change is quarantined. Files of one
  batch are merged in order: a file that conflicts with an earlier file of the batch is
  quarantined as it would be after that file's commit.
- ``rescue``: the table's schema never changes after creation; a file's top-level columns that
  are new or do not fit the table's type go, with their original values, into ``_rescued_data``
  (a JSON object per row); nothing is dropped.
- ``strict``: any change that would alter the table, and any breaking change, quarantines the file
  (columns missing from the file, and narrower values that fit, are fine).

icefeed's own columns (:data:`RESERVED_COLUMNS`) are compared with a file's top-level columns
ignoring case, as Spark resolves names: a file with a column such as ``_SOURCE_FILE`` or
``_Batch_Id`` is quarantined under every policy (RESERVED_NAME, like a file spelling one column
twice), so no table is ever created or evolved with a column that shadows a lineage column.

Quarantined files open a proposal; an operator resolves it (``icefeed schema approve``). An
approved proposal's signature maps to its resolution in ``approved``: ``merge`` accepts the
changes as if compatible (the table takes the merged schema), ``rescue`` loads the file with its
offending top-level columns in ``_rescued_data``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from worker.domain.schema import (
    VOID,
    Change,
    ChangeKind,
    Field,
    Struct,
    diff,
    is_compatible,
    merge,
    needs_table_change,
    type_string,
)

LINEAGE_COLUMNS: Final = ("_source_file", "_batch_id", "_ingested_at")
RESCUED_COLUMN: Final = "_rescued_data"
RESERVED_COLUMNS: Final = frozenset((*LINEAGE_COLUMNS, RESCUED_COLUMN))


def fold(name: str) -> str:
    """A column name as engines compare names when case does not matter (Spark's resolver is
    case-insensitive by default): ``_SOURCE_FILE``, ``_Source_File`` and ``_source_file`` are one."""
    return name.upper().lower()


_RESERVED_BY_FOLD: Final = {fold(name): name for name in RESERVED_COLUMNS}


def reserved_name(name: str) -> str | None:
    """The reserved column (``_source_file``, ``_batch_id``, ``_ingested_at``, ``_rescued_data``)
    that ``name`` means once case is ignored, or None."""
    return _RESERVED_BY_FOLD.get(fold(name))


class Policy(StrEnum):
    EVOLVE = "evolve"
    RESCUE = "rescue"
    STRICT = "strict"


@dataclass(frozen=True, slots=True)
class FileDecision:
    file_id: int
    load: bool
    changes: tuple[Change, ...] = ()  # against the schema the file was judged by
    rescued: tuple[str, ...] = ()  # rescue: top-level columns moved into _rescued_data
    signature: str = ""  # identifies the set of offending changes (quarantine / approval)

    @property
    def reason(self) -> str:
        offending = [c for c in self.changes if c.breaking or c.requires_table_change] or list(self.changes)
        return "; ".join(str(c) for c in offending)

    @property
    def error_class(self) -> str:
        """What a quarantined file is recorded as: ``SchemaConflict`` when a change is breaking
        (the table cannot take it), ``SchemaChange`` when the policy alone holds it back."""
        return "SchemaConflict" if any(c.breaking for c in self.changes) else "SchemaChange"


@dataclass(frozen=True, slots=True)
class BatchPlan:
    policy: Policy
    table: Struct | None  # data columns before the batch (None: the table does not exist yet)
    target: Struct  # data columns after the batch
    decisions: dict[int, FileDecision] = field(default_factory=dict)

    @property
    def loaded(self) -> list[int]:
        return [fid for fid, d in self.decisions.items() if d.load]

    @property
    def quarantined(self) -> list[FileDecision]:
        return [d for d in self.decisions.values() if not d.load]

    @property
    def table_changes(self) -> list[Change]:
        """What this batch changes in the table (empty: the schema stays as it is)."""
        if self.table is None:
            return []
        return [c for c in diff(self.table, self.target) if c.requires_table_change]

    @property
    def creates_table(self) -> bool:
        return self.table is None and bool(self.loaded)

    @property
    def rescues(self) -> bool:
        """Whether the written rows carry a ``_rescued_data`` column."""
        return self.policy is Policy.RESCUE or any(d.rescued for d in self.decisions.values() if d.load)


def data_columns(schema: Struct) -> Struct:
    """A table's schema without icefeed's own columns (compared ignoring case)."""
    return Struct(tuple(f for f in schema.fields if reserved_name(f.name) is None))


def reserved_names(schema: Struct) -> list[Change]:
    """A file's top-level columns that collide with icefeed's own columns, ignoring case."""
    out = []
    for f in schema.fields:
        reserved = reserved_name(f.name)
        if reserved is not None:
            out.append(Change(ChangeKind.RESERVED_NAME, f.name, None, type_string(f.type), reserved))
    return out


def table_collisions(columns: Sequence[str]) -> list[tuple[str, str]]:
    """What is wrong with a table's column names, as (column, problem): a column that is not
    icefeed's own but collides with one ignoring case (``_Batch_Id`` beside ``_batch_id``), or the
    second of two columns that differ only in case. Spark cannot tell such columns apart: every
    append to the table and every recovery probe fails until the column is renamed."""
    problems = []
    seen: dict[str, str] = {}
    for name in columns:
        reserved = reserved_name(name)
        if reserved is not None and reserved != name:
            problems.append((name, f"column {name} collides with icefeed's column {reserved}"))
            continue
        first = seen.setdefault(fold(name), name)
        if first != name:
            problems.append((name, f"columns {first} and {name} differ only in case"))
    return problems


def signature(changes: Iterable[Change]) -> str:
    """A stable id for a set of changes: equal conflicts share one proposal."""
    text = "\n".join(sorted(f"{c.kind}|{c.path}|{c.table_type}|{c.incoming_type}" for c in changes))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _offending(policy: Policy, changes: list[Change]) -> list[Change]:
    if policy is Policy.STRICT:
        return [c for c in changes if c.breaking or c.requires_table_change]
    return [c for c in changes if c.breaking]


def drop_void(schema: Struct) -> Struct:
    """Without the fields in which only nulls were seen (type void, e.g. a header-only CSV): they
    carry no value and no type, so they neither create nor change a table column."""
    fields = []
    for f in schema.fields:
        if f.type is VOID:
            continue
        fields.append(Field(f.name, drop_void(f.type), f.nullable) if isinstance(f.type, Struct) else f)
    return Struct(tuple(fields))


def duplicate_names(schema: Struct, prefix: str = "") -> list[Change]:
    """Fields of one struct whose names differ only in case: ambiguous for Spark, so breaking."""
    out: list[Change] = []
    seen: dict[str, str] = {}
    for f in schema.fields:
        path = f"{prefix}{f.name}"
        first = seen.setdefault(fold(f.name), f.name)
        if first != f.name:
            out.append(Change(ChangeKind.DUPLICATE_NAME, path, None, type_string(f.type), f"{prefix}{first}"))
        if isinstance(f.type, Struct):
            out += duplicate_names(f.type, f"{path}.")
    return out


def plan_batch(
    policy: Policy,
    table: Struct | None,
    files: Sequence[tuple[int, Struct]],
    approved: Mapping[str, str] | None = None,
) -> BatchPlan:
    """Decide every file of a batch (in the given order) and the table's schema after it.

    ``files`` carry each file's schema as read, icefeed's own column names included: a file with
    a column named like one of them (ignoring case) is quarantined, never merged or dropped."""
    decisions: dict[int, FileDecision] = {}
    target = table
    for file_id, incoming in files:
        reserved = reserved_names(incoming)
        incoming = drop_void(data_columns(incoming))
        clashes = reserved + duplicate_names(incoming)
        if clashes:
            decisions[file_id] = FileDecision(file_id, False, tuple(clashes), signature=signature(clashes))
            continue
        if target is None:  # the first loadable file defines a new table
            target = merge(Struct(()), incoming)
            decisions[file_id] = FileDecision(file_id, True)
            continue
        changes = diff(target, incoming)
        if policy is Policy.RESCUE:
            rescued = _rescued_columns(target, incoming)
            decisions[file_id] = FileDecision(file_id, True, tuple(changes), rescued)
            continue
        offending = _offending(policy, changes)
        sig = signature(offending) if offending else ""
        resolution = (approved or {}).get(sig) if sig else None
        if offending and resolution is None:
            decisions[file_id] = FileDecision(file_id, False, tuple(changes), signature=sig)
            continue
        if resolution == "rescue":
            rescued = _rescued_columns(target, incoming)
            decisions[file_id] = FileDecision(file_id, True, tuple(changes), rescued, signature=sig)
            continue
        if is_compatible(changes):
            if policy is Policy.EVOLVE or sig:
                target = merge(target, incoming)
            decisions[file_id] = FileDecision(file_id, True, tuple(changes), signature=sig)
        else:  # approved, yet still not mergeable: nothing sensible to load
            decisions[file_id] = FileDecision(file_id, False, tuple(changes), signature=sig)
    return BatchPlan(policy, table, target or Struct(()), decisions)


def _rescued_columns(table: Struct, incoming: Struct) -> tuple[str, ...]:
    rescued = []
    for f in incoming.fields:
        t = table.field(f.name)
        if t is None:
            rescued.append(f.name)
            continue
        changes = diff(Struct((t,)), Struct((f,)))
        if not is_compatible(changes) or needs_table_change(c for c in changes if c.kind != "nullability_changed"):
            rescued.append(f.name)
    return tuple(rescued)
