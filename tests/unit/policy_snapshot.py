"""Every field of every decision ``plan_batch`` makes for batches of several files under each
policy, with and without approvals, kept in tests/unit/snapshots/policy.json. test_policy.py
states the rules; this pins each decision whole (file id, changes, rescued columns, signature)
and the table after the batch.

    python -m tests.unit.policy_snapshot     # rewrite the snapshot after a deliberate change
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.snapshot_check import write
from worker.domain.policy import Policy, plan_batch
from worker.domain.schema import parse_ddl, to_ddl

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "policy.json"

TABLE = "id BIGINT NOT NULL, n INT, s STRUCT<x: INT NOT NULL, v: VOID>"
FILES = [
    "id BIGINT NOT NULL, n INT, s STRUCT<x: INT NOT NULL>",  # the table's own columns
    "id BIGINT NOT NULL, n INT, note STRING",  # a new column
    "id STRING, n INT",  # a conflict
    "id BIGINT, n BIGINT, _Batch_Id STRING",  # a reserved name
    "id BIGINT, n INT, N INT",  # names differing in case
    "id INT, s STRUCT<x: INT, y: STRING, v: VOID>, extra VOID",  # narrower, nested field, void
    "id BIGINT NOT NULL, n INT, note BIGINT",  # conflicts with the new column of file 2
]


def _plans() -> dict[str, object]:
    files = [(i + 1, parse_ddl(ddl)) for i, ddl in enumerate(FILES)]
    out: dict[str, object] = {}
    for policy in Policy:
        for table_name, table in (("existing table", parse_ddl(TABLE)), ("new table", None)):
            first = plan_batch(policy, table, files)
            approvals = {d.signature: r for d, r in zip(first.quarantined, ["merge", "rescue"] * 4, strict=False)}
            for label, approved in (("", None), (" + approvals", approvals)):
                plan = plan_batch(policy, table, files, approved)
                out[f"{policy} / {table_name}{label}"] = {
                    "target": to_ddl(plan.target),
                    "creates_table": plan.creates_table,
                    "rescues": plan.rescues,
                    "table_changes": [str(c) for c in plan.table_changes],
                    "decisions": [repr(d) for d in plan.decisions.values()],
                    "reasons": [d.reason for d in plan.decisions.values()],
                    "error_classes": [d.error_class for d in plan.decisions.values()],
                }
    return out


def snapshot() -> dict[str, object]:
    return json.loads(json.dumps(_plans()))


if __name__ == "__main__":
    write(SNAPSHOT, _plans())
