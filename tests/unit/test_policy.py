"""worker.domain.policy.plan_batch, branch by branch: what each schema policy (evolve, rescue,
strict) does with a file that matches the table, adds a column, widens a type, changes
nullability, or conflicts; and what an operator's approval (by signature) turns a quarantined
file into."""

from __future__ import annotations

import pytest

from worker.domain.policy import BatchPlan, Policy, plan_batch, signature
from worker.domain.schema import INT, LONG, STRING, ChangeKind, Field, Struct


def S(*fields: Field) -> Struct:
    return Struct(fields)


TABLE = S(Field("id", LONG, False), Field("n", INT))
SAME = S(Field("id", LONG, False), Field("n", INT))
ADDED = S(Field("id", LONG, False), Field("n", INT), Field("note", STRING))  # compatible, alters the table
WIDENED = S(Field("id", LONG, False), Field("n", LONG))  # compatible, alters the table
NULLABLE = S(Field("id", LONG, True), Field("n", INT))  # compatible, alters the table
NARROWER = S(Field("id", INT, False))  # fits the table as it is (n missing: read as null)
CONFLICT = S(Field("id", STRING, False), Field("n", INT))  # breaking


def decision(plan: BatchPlan, file_id: int = 1) -> tuple[bool, tuple[str, ...], str]:
    d = plan.decisions[file_id]
    return d.load, d.rescued, d.error_class if not d.load else ""


# --------------------------------------------------------------------------- a new table


@pytest.mark.parametrize("policy", list(Policy))
def test_the_first_file_creates_the_table_under_every_policy(policy: Policy) -> None:
    plan = plan_batch(policy, None, [(1, ADDED), (2, CONFLICT)])
    assert plan.creates_table
    # A new table takes the file's columns, every one nullable (a later file may lack any of them).
    assert plan.target == S(*(Field(f.name, f.type, True) for f in ADDED.fields))
    assert plan.decisions[1].load and plan.decisions[1].changes == ()
    # The second file is judged against the table the first one made: its id conflicts.
    assert plan.decisions[2].load is (policy is Policy.RESCUE)
    assert plan.decisions[2].rescued == (("id",) if policy is Policy.RESCUE else ())


@pytest.mark.parametrize("policy", list(Policy))
def test_a_file_like_the_table_loads_unchanged_under_every_policy(policy: Policy) -> None:
    plan = plan_batch(policy, TABLE, [(1, SAME), (2, NARROWER)])
    assert plan.loaded == [1, 2] and plan.target == TABLE and plan.table_changes == []
    assert plan.decisions[1].rescued == () and plan.decisions[2].rescued == ()


# --------------------------------------------------------------------------- evolve


@pytest.mark.parametrize("incoming", [ADDED, WIDENED, NULLABLE], ids=["added", "widened", "nullable"])
def test_evolve_applies_compatible_changes_to_the_table(incoming: Struct) -> None:
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, incoming)])
    assert decision(plan) == (True, (), "")
    assert plan.target != TABLE and plan.table_changes, plan
    assert plan.decisions[1].signature == ""  # nothing offending: no proposal


def test_evolve_merges_the_files_of_a_batch_in_order() -> None:
    second = S(Field("id", LONG, False), Field("n", INT), Field("note", STRING), Field("tag", STRING))
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, ADDED), (2, second)])
    assert plan.loaded == [1, 2]
    assert [f.name for f in plan.target.fields] == ["id", "n", "note", "tag"]
    assert [c.path for c in plan.table_changes] == ["note", "tag"]


def test_evolve_quarantines_a_breaking_change_as_a_conflict() -> None:
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, CONFLICT), (2, ADDED)])
    assert decision(plan) == (False, (), "SchemaConflict")
    d = plan.decisions[1]
    assert d.signature == signature([c for c in d.changes if c.breaking])
    assert "type conflict at id" in d.reason
    assert plan.loaded == [2] and plan.target == ADDED  # the other file still evolves the table


def test_evolve_judges_a_file_against_the_schema_an_earlier_file_of_the_batch_made() -> None:
    note_long = S(Field("id", LONG, False), Field("note", LONG))
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, ADDED), (2, note_long)])
    assert plan.loaded == [1] and not plan.decisions[2].load
    assert [c.kind for c in plan.decisions[2].changes if c.breaking] == [ChangeKind.TYPE_CONFLICT]


# --------------------------------------------------------------------------- strict


@pytest.mark.parametrize("incoming", [ADDED, WIDENED, NULLABLE], ids=["added", "widened", "nullable"])
def test_strict_quarantines_any_change_that_would_alter_the_table(incoming: Struct) -> None:
    plan = plan_batch(Policy.STRICT, TABLE, [(1, incoming)])
    assert decision(plan) == (False, (), "SchemaChange")  # held back by the policy, not a conflict
    d = plan.decisions[1]
    assert d.signature == signature(d.changes) and d.signature
    assert plan.target == TABLE and plan.table_changes == []


def test_strict_quarantines_a_breaking_change_as_a_conflict() -> None:
    plan = plan_batch(Policy.STRICT, TABLE, [(1, CONFLICT)])
    assert decision(plan) == (False, (), "SchemaConflict")


def test_strict_and_evolve_differ_only_on_compatible_table_changes() -> None:
    files = [(1, SAME), (2, ADDED), (3, CONFLICT), (4, NARROWER)]
    strict, evolve = plan_batch(Policy.STRICT, TABLE, files), plan_batch(Policy.EVOLVE, TABLE, files)
    assert strict.loaded == [1, 4] and evolve.loaded == [1, 2, 4]


# --------------------------------------------------------------------------- rescue


def test_rescue_never_changes_the_table_and_moves_what_does_not_fit_into_rescued_data() -> None:
    both = S(Field("id", STRING, False), Field("n", LONG), Field("note", STRING))
    plan = plan_batch(Policy.RESCUE, TABLE, [(1, ADDED), (2, WIDENED), (3, CONFLICT), (4, both), (5, SAME)])
    assert plan.loaded == [1, 2, 3, 4, 5] and plan.quarantined == []
    assert plan.target == TABLE and plan.table_changes == []
    rescued = {fid: d.rescued for fid, d in plan.decisions.items()}
    assert rescued == {1: ("note",), 2: ("n",), 3: ("id",), 4: ("id", "n", "note"), 5: ()}
    assert plan.rescues


def test_rescue_keeps_a_column_whose_only_change_is_nullability() -> None:
    """A nullable column into a NOT NULL one: the values fit the column's type, so they load in
    it (a null there is the engine's to refuse), not as text in _rescued_data."""
    plan = plan_batch(Policy.RESCUE, TABLE, [(1, NULLABLE)])
    assert decision(plan) == (True, (), "")
    assert [c.kind for c in plan.decisions[1].changes] == [ChangeKind.NULLABILITY_CHANGED]


def test_rescue_of_a_new_table_carries_the_rescued_column() -> None:
    plan = plan_batch(Policy.RESCUE, None, [(1, SAME)])
    assert plan.creates_table and plan.rescues and plan.decisions[1].rescued == ()


# --------------------------------------------------------------------------- approvals


def strict_quarantine(incoming: Struct) -> str:
    plan = plan_batch(Policy.STRICT, TABLE, [(1, incoming)])
    assert not plan.decisions[1].load
    return plan.decisions[1].signature


def test_an_approved_merge_loads_the_file_and_the_table_takes_its_changes() -> None:
    sig = strict_quarantine(ADDED)
    plan = plan_batch(Policy.STRICT, TABLE, [(1, ADDED)], {sig: "merge"})
    assert decision(plan) == (True, (), "")
    assert plan.decisions[1].signature == sig
    assert plan.target == ADDED and [c.path for c in plan.table_changes] == ["note"]


def test_an_approved_rescue_loads_the_file_with_its_offending_columns_rescued() -> None:
    sig = strict_quarantine(ADDED)
    plan = plan_batch(Policy.STRICT, TABLE, [(1, ADDED)], {sig: "rescue"})
    assert decision(plan) == (True, ("note",), "")
    assert plan.target == TABLE and plan.rescues


def test_an_approval_applies_to_its_own_signature_only() -> None:
    sig = strict_quarantine(ADDED)
    plan = plan_batch(Policy.STRICT, TABLE, [(1, ADDED), (2, WIDENED)], {sig: "merge"})
    assert plan.loaded == [1] and plan.decisions[2].signature not in ("", sig)
    assert [f.type for f in plan.target.fields if f.name == "n"] == [INT]


def test_an_approved_merge_of_a_breaking_change_still_loads_nothing() -> None:
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, CONFLICT)])
    sig = plan.decisions[1].signature
    again = plan_batch(Policy.EVOLVE, TABLE, [(1, CONFLICT)], {sig: "merge"})
    assert decision(again) == (False, (), "SchemaConflict") and again.target == TABLE
    rescued = plan_batch(Policy.EVOLVE, TABLE, [(1, CONFLICT)], {sig: "rescue"})
    assert decision(rescued) == (True, ("id",), "")  # an approved rescue takes the conflicting column aside


def test_evolve_needs_no_approval_for_compatible_changes_even_when_one_is_listed() -> None:
    sig = strict_quarantine(ADDED)  # the same changes under strict
    plan = plan_batch(Policy.EVOLVE, TABLE, [(1, ADDED)], {sig: "rescue"})
    assert decision(plan) == (True, (), "") and plan.target == ADDED


def test_every_decision_of_mixed_batches_matches_its_snapshot() -> None:
    """Each policy, an existing or a new table, with and without approvals, over one batch of
    seven files (tests/unit/policy_snapshot.py); after a deliberate change:
    ``python -m tests.unit.policy_snapshot``."""
    from tests.unit.policy_snapshot import SNAPSHOT, snapshot
    from tests.unit.snapshot_check import assert_matches

    assert_matches(SNAPSHOT, snapshot())


def test_void_fields_are_dropped_without_changing_their_struct_nullability() -> None:
    from worker.domain.policy import drop_void
    from worker.domain.schema import VOID

    inner = S(Field("x", INT), Field("v", VOID))
    assert drop_void(S(Field("s", inner, False), Field("t", inner, True), Field("w", VOID))) == S(
        Field("s", S(Field("x", INT)), False), Field("t", S(Field("x", INT)), True)
    )


def test_rescue_looks_at_every_column_after_a_new_one() -> None:
    plan = plan_batch(Policy.RESCUE, TABLE, [(1, S(Field("first", STRING), Field("id", STRING), Field("n", INT)))])
    assert plan.decisions[1].rescued == ("first", "id")
