"""Tests for worker.domain.schema: model, Spark JSON/DDL, hints, merge and diff."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.domain.schema import (
    BINARY,
    BOOLEAN,
    DATE,
    DOUBLE,
    FLOAT,
    INT,
    LONG,
    STRING,
    TIMESTAMP,
    TIMESTAMP_NTZ,
    VOID,
    Array,
    Change,
    ChangeKind,
    DataType,
    Decimal,
    Field,
    Map,
    Primitive,
    SchemaConflict,
    SchemaError,
    Struct,
    can_merge,
    diff,
    from_spark_json,
    is_compatible,
    merge,
    needs_table_change,
    parse_ddl,
    parse_type,
    to_ddl,
    to_spark_json,
    type_string,
)

K = ChangeKind


def S(*fields: Field) -> Struct:
    return Struct(tuple(fields))


def F(name: str, t: DataType, nullable: bool = True) -> Field:
    return Field(name, t, nullable)


def kinds(changes: list[Change]) -> list[tuple[ChangeKind, str]]:
    return [(c.kind, c.path) for c in changes]


# A schema as pyspark 4.0 prints it for a typical orders file (DataFrame.schema.json()).
PYSPARK_JSON = (
    '{"fields":[{"metadata":{},"name":"order_id","nullable":false,"type":"long"},'
    '{"metadata":{},"name":"customer","nullable":true,"type":{"fields":['
    '{"metadata":{},"name":"id","nullable":true,"type":"integer"},'
    '{"metadata":{},"name":"email","nullable":true,"type":"string"}],"type":"struct"}},'
    '{"metadata":{},"name":"amount","nullable":true,"type":"decimal(18,2)"},'
    '{"metadata":{},"name":"tags","nullable":true,"type":'
    '{"containsNull":true,"elementType":"string","type":"array"}},'
    '{"metadata":{},"name":"lines","nullable":true,"type":{"containsNull":false,'
    '"elementType":{"fields":[{"metadata":{},"name":"sku","nullable":false,"type":"string"},'
    '{"metadata":{},"name":"qty","nullable":true,"type":"integer"}],"type":"struct"},'
    '"type":"array"}},'
    '{"metadata":{},"name":"attrs","nullable":true,"type":{"keyType":"string",'
    '"type":"map","valueContainsNull":true,"valueType":"double"}},'
    '{"metadata":{},"name":"created_at","nullable":true,"type":"timestamp"},'
    '{"metadata":{},"name":"local_ts","nullable":true,"type":"timestamp_ntz"},'
    '{"metadata":{},"name":"day","nullable":true,"type":"date"},'
    '{"metadata":{},"name":"payload","nullable":true,"type":"binary"},'
    '{"metadata":{},"name":"flag","nullable":true,"type":"boolean"},'
    '{"metadata":{},"name":"ratio","nullable":true,"type":"float"},'
    '{"metadata":{},"name":"score","nullable":true,"type":"double"},'
    '{"metadata":{},"name":"nothing","nullable":true,"type":"void"}],"type":"struct"}'
)

PYSPARK_MODEL = S(
    F("order_id", LONG, False),
    F("customer", S(F("id", INT), F("email", STRING))),
    F("amount", Decimal(18, 2)),
    F("tags", Array(STRING, True)),
    F("lines", Array(S(F("sku", STRING, False), F("qty", INT)), False)),
    F("attrs", Map(STRING, DOUBLE, True)),
    F("created_at", TIMESTAMP),
    F("local_ts", TIMESTAMP_NTZ),
    F("day", DATE),
    F("payload", BINARY),
    F("flag", BOOLEAN),
    F("ratio", FLOAT),
    F("score", DOUBLE),
    F("nothing", VOID),
)


# ------------------------------------------------------------------------- model


def test_model_is_frozen_and_hashable() -> None:
    a = S(F("a", Array(Map(STRING, Decimal(10, 2)))), F("b", S(F("c", VOID))))
    b = S(F("a", Array(Map(STRING, Decimal(10, 2)))), F("b", S(F("c", VOID))))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, S()}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.fields = ()  # type: ignore[misc]
    assert a.field("b") == F("b", S(F("c", VOID)))
    assert a.field("B") is None
    assert a.names == ("a", "b")


@pytest.mark.parametrize(("p", "s"), [(0, 0), (39, 0), (10, 11), (10, -1)])
def test_decimal_bounds(p: int, s: int) -> None:
    with pytest.raises(SchemaError):
        Decimal(p, s)


def test_struct_rejects_duplicate_names_but_not_case_variants() -> None:
    with pytest.raises(SchemaError, match="duplicate"):
        S(F("a", INT), F("a", LONG))
    assert S(F("a", INT), F("A", LONG)).names == ("a", "A")


# ------------------------------------------------------------------------- Spark JSON


def test_real_pyspark_json_parses_to_model() -> None:
    assert from_spark_json(PYSPARK_JSON) == PYSPARK_MODEL


def test_real_pyspark_json_round_trips_exactly() -> None:
    parsed = json.loads(PYSPARK_JSON)
    assert to_spark_json(from_spark_json(PYSPARK_JSON)) == parsed
    assert to_spark_json(from_spark_json(parsed)) == parsed
    assert from_spark_json(to_spark_json(PYSPARK_MODEL)) == PYSPARK_MODEL


def test_to_spark_json_shape() -> None:
    s = S(F("a", LONG, False), F("m", Map(STRING, Array(INT, False), False)))
    assert to_spark_json(s) == {
        "type": "struct",
        "fields": [
            {"name": "a", "type": "long", "nullable": False, "metadata": {}},
            {
                "name": "m",
                "type": {
                    "type": "map",
                    "keyType": "string",
                    "valueType": {
                        "type": "array",
                        "elementType": "integer",
                        "containsNull": False,
                    },
                    "valueContainsNull": False,
                },
                "nullable": True,
                "metadata": {},
            },
        ],
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("byte", INT),
        ("short", INT),
        ("integer", INT),
        ("decimal(38,0)", Decimal(38, 0)),
        ("decimal(5, 5)", Decimal(5, 5)),
        ("decimal", Decimal(10, 0)),
        ("varchar(12)", STRING),
        ("char(3)", STRING),
    ],
)
def test_json_accepts_spark_aliases(name: str, expected: DataType) -> None:
    obj = {"type": "struct", "fields": [{"name": "x", "type": name, "nullable": True}]}
    assert from_spark_json(obj) == S(F("x", expected))


def test_json_ignores_metadata() -> None:
    obj = {
        "type": "struct",
        "fields": [{"name": "x", "type": "string", "nullable": True, "metadata": {"c": 1}}],
    }
    assert to_spark_json(from_spark_json(obj))["fields"][0]["metadata"] == {}


def _wrap(t: Any, name: str = "x") -> dict[str, Any]:
    return {"type": "struct", "fields": [{"name": name, "type": t, "nullable": True}]}


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        (_wrap("variant"), "at x"),
        (_wrap("interval day"), "at x"),
        (_wrap({"type": "udt", "class": "x"}), "at x"),
        (
            _wrap({"type": "array", "elementType": "hyper", "containsNull": True}),
            "at x.element",
        ),
        (
            _wrap(
                {
                    "type": "map",
                    "keyType": "geo",
                    "valueType": "int",
                    "valueContainsNull": True,
                }
            ),
            "at x.key",
        ),
        (
            _wrap(
                {
                    "type": "map",
                    "keyType": "string",
                    "valueType": "geo",
                    "valueContainsNull": True,
                }
            ),
            "at x.value",
        ),
        (_wrap(_wrap("geometry", "inner")), "at x.inner"),
        (
            _wrap(
                {
                    "type": "array",
                    "elementType": _wrap("geometry", "g"),
                    "containsNull": True,
                }
            ),
            "at x.element.g",
        ),
        (_wrap("decimal(40,2)"), "at x"),
        (_wrap("decimal(4,5)"), "at x"),
    ],
)
def test_json_unknown_types_raise_with_path(obj: dict[str, Any], where: str) -> None:
    with pytest.raises(SchemaError) as exc:
        from_spark_json(obj)
    assert str(exc.value).endswith(where), str(exc.value)


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        '"long"',
        "[]",
        {"type": "array", "elementType": "long", "containsNull": True},
        {"type": "struct"},
        {"type": "struct", "fields": {}},
        {"type": "struct", "fields": [{"name": "a", "type": "long"}]},
        {
            "type": "struct",
            "fields": [{"name": "a", "type": "long", "nullable": "yes"}],
        },
        {"type": "struct", "fields": [{"name": 1, "type": "long", "nullable": True}]},
        {"type": "struct", "fields": [{"type": "long", "nullable": True}]},
        {"type": "struct", "fields": ["a"]},
        {"fields": []},
        _wrap(7),
        {
            "type": "struct",
            "fields": [
                {"name": "a", "type": "long", "nullable": True},
                {"name": "a", "type": "string", "nullable": True},
            ],
        },
    ],
)
def test_json_malformed_raises_schema_error(bad: Any) -> None:
    with pytest.raises(SchemaError):
        from_spark_json(bad)


def test_json_error_is_value_error() -> None:
    assert issubclass(SchemaError, ValueError)
    assert issubclass(SchemaConflict, SchemaError)


# ------------------------------------------------------------------------- DDL and hints


def test_to_ddl() -> None:
    s = S(
        F("a", LONG, False),
        F("b", S(F("c", STRING), F("d", Decimal(18, 2), False))),
        F("we`ird", Array(Map(STRING, TIMESTAMP_NTZ))),
        F("v", VOID),
    )
    assert to_ddl(s) == (
        "`a` BIGINT NOT NULL, `b` STRUCT<`c`: STRING, `d`: DECIMAL(18,2) NOT NULL>, "
        "`we``ird` ARRAY<MAP<STRING, TIMESTAMP_NTZ>>, `v` VOID"
    )
    assert to_ddl(S()) == ""


@pytest.mark.parametrize(
    ("t", "ddl"),
    [
        (BOOLEAN, "BOOLEAN"),
        (INT, "INT"),
        (LONG, "BIGINT"),
        (FLOAT, "FLOAT"),
        (DOUBLE, "DOUBLE"),
        (STRING, "STRING"),
        (BINARY, "BINARY"),
        (DATE, "DATE"),
        (TIMESTAMP, "TIMESTAMP"),
        (TIMESTAMP_NTZ, "TIMESTAMP_NTZ"),
        (VOID, "VOID"),
    ],
)
def test_ddl_primitive_names(t: Primitive, ddl: str) -> None:
    assert to_ddl(S(F("x", t))) == f"`x` {ddl}"
    assert parse_type(ddl) == t


def test_type_string_is_spark_simple_string() -> None:
    t = S(F("amount", DOUBLE), F("a b", Array(Map(INT, Decimal(9, 3)))), F("l", LONG))
    assert type_string(t) == "struct<amount:double,`a b`:array<map<int,decimal(9,3)>>,l:bigint>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("decimal(18,2)", Decimal(18, 2)),
        ("DECIMAL( 18 , 2 )", Decimal(18, 2)),
        ("numeric(7)", Decimal(7, 0)),
        ("decimal", Decimal(10, 0)),
        ("timestamp", TIMESTAMP),
        ("TIMESTAMP_LTZ", TIMESTAMP),
        ("timestamp_ntz", TIMESTAMP_NTZ),
        ("bigint", LONG),
        ("Long", LONG),
        ("string", STRING),
        ("varchar(20)", STRING),
        ("int", INT),
        ("integer", INT),
        ("smallint", INT),
        ("tinyint", INT),
        ("float", FLOAT),
        ("real", FLOAT),
        ("double", DOUBLE),
        ("boolean", BOOLEAN),
        ("BOOL", BOOLEAN),
        ("date", DATE),
        ("binary", BINARY),
        ("void", VOID),
        ("array<string>", Array(STRING)),
        ("ARRAY<ARRAY<INT>>", Array(Array(INT))),
        ("map<string, decimal(5,1)>", Map(STRING, Decimal(5, 1))),
        ("struct<a:int,b:string>", S(F("a", INT), F("b", STRING))),
        ("STRUCT<a: INT NOT NULL, b STRING>", S(F("a", INT, False), F("b", STRING))),
        ("struct<`we``ird name`:bigint>", S(F("we`ird name", LONG))),
        ("struct<>", S()),
        (
            "  struct < x : array < struct<y:double> > >  ",
            S(F("x", Array(S(F("y", DOUBLE))))),
        ),
    ],
)
def test_parse_type(text: str, expected: DataType) -> None:
    assert parse_type(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "geometry",
        "decimal(18,2",
        "decimal(39,2)",
        "decimal(2,3)",
        "decimal(a,b)",
        "array<string",
        "array<>",
        "map<string>",
        "struct<a:int,a:string>",
        "struct<a:int,>",
        "int int",
        "string;",
        "`int`",
        "struct<a:int not>",
    ],
)
def test_parse_type_rejects(text: str) -> None:
    with pytest.raises(SchemaError, match="cannot parse type"):
        parse_type(text)


def test_parse_ddl() -> None:
    assert parse_ddl("a BIGINT NOT NULL, `b c` struct<d: string>, e array<int>") == S(
        F("a", LONG, False), F("b c", S(F("d", STRING))), F("e", Array(INT))
    )
    assert parse_ddl("   ") == S()
    with pytest.raises(SchemaError):
        parse_ddl("a int, a string")


# ------------------------------------------------------------------------- merge


@pytest.mark.parametrize(
    ("x", "y", "wide"),
    [
        (INT, LONG, LONG),
        (FLOAT, DOUBLE, DOUBLE),
        (Decimal(10, 2), Decimal(18, 2), Decimal(18, 2)),
        (VOID, STRING, STRING),
        (VOID, S(F("a", INT)), S(F("a", INT))),
        (VOID, Array(INT), Array(INT)),
        (Array(INT, False), Array(LONG, False), Array(LONG, False)),
        (Array(VOID, False), Array(DATE, True), Array(DATE, True)),
        (
            Map(STRING, FLOAT, False),
            Map(STRING, DOUBLE, False),
            Map(STRING, DOUBLE, False),
        ),
        (Map(INT, VOID, False), Map(INT, BINARY, True), Map(INT, BINARY, True)),
    ],
)
def test_merge_legal_promotions_both_ways(x: DataType, y: DataType, wide: DataType) -> None:
    assert merge(S(F("c", x)), S(F("c", y))) == S(F("c", wide))
    assert merge(S(F("c", y)), S(F("c", x))) == S(F("c", wide))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (INT, DOUBLE),
        (LONG, DOUBLE),
        (INT, FLOAT),
        (LONG, FLOAT),
        (INT, STRING),
        (DATE, TIMESTAMP),
        (TIMESTAMP, TIMESTAMP_NTZ),
        (Decimal(10, 2), Decimal(10, 3)),
        (Decimal(10, 2), Decimal(18, 4)),
        (INT, Decimal(10, 0)),
        (DOUBLE, Decimal(10, 2)),
        (DOUBLE, S(F("amount", DOUBLE))),
        (Array(INT), INT),
        (Array(INT), Map(INT, INT)),
        (Map(INT, STRING), Map(LONG, STRING)),
        (Map(STRING, STRING), Map(BINARY, STRING)),
        (Array(INT), Array(DOUBLE)),
        (S(F("a", INT)), S(F("a", STRING))),
    ],
)
def test_merge_conflicts(x: DataType, y: DataType) -> None:
    for a, b in [(S(F("c", x)), S(F("c", y))), (S(F("c", y)), S(F("c", x)))]:
        with pytest.raises(SchemaConflict) as exc:
            merge(a, b)
        assert exc.value.changes, "conflict must carry its changes"
        assert all(c.breaking for c in exc.value.changes)
        assert exc.value.changes[0].path.startswith("c")
        assert not can_merge(a, b)


def test_merge_column_order_and_new_columns_nullable() -> None:
    a = S(F("id", LONG, False), F("name", STRING, False))
    b = S(F("extra", INT, False), F("id", INT, False), F("more", DATE, False))
    assert merge(a, b) == S(F("id", LONG, False), F("name", STRING, True), F("extra", INT), F("more", DATE))
    assert merge(b, a) == S(F("extra", INT), F("id", LONG, False), F("more", DATE), F("name", STRING))


def test_merge_nullability_is_or() -> None:
    assert merge(S(F("a", INT, False)), S(F("a", INT, True))) == S(F("a", INT, True))
    assert merge(S(F("a", INT, True)), S(F("a", INT, False))) == S(F("a", INT, True))
    assert merge(S(F("a", INT, False)), S(F("a", INT, False))) == S(F("a", INT, False))


def test_merge_nested_struct_recursively() -> None:
    a = S(F("s", S(F("x", INT, False), F("y", STRING)), False))
    b = S(F("s", S(F("z", DOUBLE, False), F("x", LONG, False))))
    assert merge(a, b) == S(F("s", S(F("x", LONG, False), F("y", STRING), F("z", DOUBLE)), True))


def test_merge_array_of_structs_and_map_values() -> None:
    a = S(F("arr", Array(S(F("a", INT)), False)), F("m", Map(STRING, S(F("x", FLOAT)))))
    b = S(
        F("arr", Array(S(F("b", STRING)), False)),
        F("m", Map(STRING, S(F("x", DOUBLE)))),
    )
    assert merge(a, b) == S(
        F("arr", Array(S(F("a", INT), F("b", STRING)), False)),
        F("m", Map(STRING, S(F("x", DOUBLE)))),
    )


def test_merge_case_clash_is_conflict_at_any_depth() -> None:
    with pytest.raises(SchemaConflict) as exc:
        merge(S(F("Price", DOUBLE)), S(F("price", DOUBLE)))
    assert [(c.kind, c.path, c.table_path) for c in exc.value.changes] == [(K.CASE_CLASH, "price", "Price")]
    with pytest.raises(SchemaConflict) as exc:
        merge(S(F("s", Array(S(F("a", INT))))), S(F("s", Array(S(F("A", INT))))))
    assert [c.path for c in exc.value.changes] == ["s.element.A"]
    # Symmetric even when one side already holds both spellings.
    both, one = S(F("a", INT), F("A", INT)), S(F("a", INT))
    assert not can_merge(both, one) and not can_merge(one, both)
    assert merge(both, both) == both


def test_schema_conflict_lists_every_conflict() -> None:
    a = S(F("a", INT), F("b", DATE), F("c", STRING))
    b = S(F("a", DOUBLE), F("b", TIMESTAMP), F("c", STRING), F("d", INT))
    with pytest.raises(SchemaConflict) as exc:
        merge(a, b)
    assert kinds(exc.value.changes) == [(K.TYPE_CONFLICT, "a"), (K.TYPE_CONFLICT, "b")]
    assert "type conflict at a: int (table) vs double (file)" in str(exc.value)


# ------------------------------------------------------------------------- diff


def test_diff_equal_is_empty() -> None:
    assert diff(PYSPARK_MODEL, PYSPARK_MODEL) == []


def test_diff_column_added_and_missing() -> None:
    table = S(F("a", INT), F("gone", STRING))
    file = S(F("a", INT), F("new", S(F("x", INT))))
    changes = diff(table, file)
    assert changes == [
        Change(K.COLUMN_MISSING, "gone", "string", None),
        Change(K.COLUMN_ADDED, "new", None, "struct<x:int>"),
    ]
    assert [c.requires_table_change for c in changes] == [False, True]
    assert not any(c.breaking for c in changes)


def test_diff_required_column_missing_needs_relaxing() -> None:
    changes = diff(S(F("a", INT, False)), S())
    assert changes == [
        Change(K.COLUMN_MISSING, "a", "int", None),
        Change(K.NULLABILITY_CHANGED, "a", "not null", "absent"),
    ]
    assert needs_table_change(changes) and is_compatible(changes)


def test_diff_nested_fields_added_and_missing() -> None:
    table = S(
        F("s", S(F("x", INT), F("y", INT))),
        F("arr", Array(S(F("c", INT)))),
        F("m", Map(STRING, S(F("x", INT)))),
    )
    file = S(
        F("s", S(F("x", INT), F("z", INT))),
        F("arr", Array(S(F("c", INT), F("d", INT)))),
        F("m", Map(STRING, S())),
    )
    assert kinds(diff(table, file)) == [
        (K.NESTED_FIELD_MISSING, "s.y"),
        (K.NESTED_FIELD_ADDED, "s.z"),
        (K.NESTED_FIELD_ADDED, "arr.element.d"),
        (K.NESTED_FIELD_MISSING, "m.value.x"),
    ]


@pytest.mark.parametrize(
    ("table", "file", "kind", "path"),
    [
        (INT, LONG, K.TYPE_WIDENED, "c"),
        (FLOAT, DOUBLE, K.TYPE_WIDENED, "c"),
        (Decimal(9, 2), Decimal(12, 2), K.TYPE_WIDENED, "c"),
        (VOID, DOUBLE, K.TYPE_WIDENED, "c"),
        (LONG, INT, K.TYPE_NARROWED, "c"),
        (DOUBLE, FLOAT, K.TYPE_NARROWED, "c"),
        (Decimal(12, 2), Decimal(9, 2), K.TYPE_NARROWED, "c"),
        (STRING, VOID, K.TYPE_NARROWED, "c"),
        (S(F("n", VOID)), S(F("n", LONG)), K.TYPE_WIDENED, "c.n"),
        (Array(INT), Array(LONG), K.TYPE_WIDENED, "c.element"),
        (Array(LONG), Array(INT), K.TYPE_NARROWED, "c.element"),
        (
            Map(STRING, S(F("x", INT))),
            Map(STRING, S(F("x", LONG))),
            K.TYPE_WIDENED,
            "c.value.x",
        ),
        (Map(STRING, DOUBLE), Map(STRING, VOID), K.TYPE_NARROWED, "c.value"),
        (INT, DOUBLE, K.TYPE_CONFLICT, "c"),
        (Decimal(10, 2), Decimal(10, 3), K.TYPE_CONFLICT, "c"),
        (S(F("n", INT)), S(F("n", DATE)), K.TYPE_CONFLICT, "c.n"),
        (
            Array(S(F("n", INT))),
            Array(S(F("n", BOOLEAN))),
            K.TYPE_CONFLICT,
            "c.element.n",
        ),
        (Map(INT, STRING), Map(LONG, STRING), K.TYPE_CONFLICT, "c.key"),
        (Map(STRING, INT), Map(STRING, FLOAT), K.TYPE_CONFLICT, "c.value"),
        (Array(INT), Map(INT, INT), K.TYPE_CONFLICT, "c"),
    ],
)
def test_diff_type_changes(table: DataType, file: DataType, kind: ChangeKind, path: str) -> None:
    changes = diff(S(F("c", table)), S(F("c", file)))
    assert kinds(changes) == [(kind, path)]
    (c,) = changes
    assert c.breaking is (kind is K.TYPE_CONFLICT)
    assert c.requires_table_change is (kind is not K.TYPE_NARROWED)
    assert can_merge(S(F("c", table)), S(F("c", file))) is not c.breaking


def test_diff_type_strings_and_message() -> None:
    (c,) = diff(S(F("price", DOUBLE)), S(F("price", S(F("amount", DOUBLE)))))
    assert (c.table_type, c.incoming_type) == ("double", "struct<amount:double>")
    assert str(c) == "type conflict at price: double (table) vs struct<amount:double> (file)"
    (w,) = diff(S(F("n", INT)), S(F("n", LONG)))
    assert str(w) == "type widened at n: int (table) vs bigint (file); table must widen"
    (n,) = diff(S(F("n", LONG)), S(F("n", INT)))
    assert str(n) == "type narrowed at n: bigint (table) vs int (file); file type fits table"
    (a,) = diff(S(), S(F("n", INT)))
    assert str(a) == "column added at n: int (file)"


def test_diff_nullability() -> None:
    # File nullable where the table is required: the table must relax.
    (c,) = diff(S(F("a", INT, False)), S(F("a", INT, True)))
    assert c == Change(K.NULLABILITY_CHANGED, "a", "not null", "nullable")
    assert c.requires_table_change and not c.breaking
    # Table nullable, file non-null: nothing to do.
    assert diff(S(F("a", INT, True)), S(F("a", INT, False))) == []
    nested_t = S(F("s", S(F("x", INT, False))), F("l", Array(INT, False)))
    nested_f = S(F("s", S(F("x", INT, True))), F("l", Array(INT, True)))
    assert kinds(diff(nested_t, nested_f)) == [
        (K.NULLABILITY_CHANGED, "s.x"),
        (K.NULLABILITY_CHANGED, "l.element"),
    ]
    assert kinds(diff(S(F("m", Map(INT, INT, False))), S(F("m", Map(INT, INT, True))))) == [
        (K.NULLABILITY_CHANGED, "m.value")
    ]
    assert diff(nested_f, nested_t) == []


def test_diff_widening_and_relaxing_together() -> None:
    assert kinds(diff(S(F("a", INT, False)), S(F("a", LONG, True)))) == [
        (K.TYPE_WIDENED, "a"),
        (K.NULLABILITY_CHANGED, "a"),
    ]


def test_diff_case_clash() -> None:
    changes = diff(S(F("s", S(F("Amount", DOUBLE)))), S(F("s", S(F("amount", DOUBLE)))))
    assert changes == [Change(K.CASE_CLASH, "s.amount", "double", "double", table_path="s.Amount")]
    (c,) = changes
    assert c.breaking and c.requires_table_change
    assert str(c) == "case clash at s.amount: s.Amount double (table) vs s.amount double (file)"
    # An exact match next to a case variant on the other side still clashes, once.
    assert kinds(diff(S(F("id", INT), F("ID", INT)), S(F("id", INT)))) == [(K.CASE_CLASH, "id")]
    assert kinds(diff(S(F("id", INT)), S(F("id", INT), F("ID", INT)))) == [(K.CASE_CLASH, "ID")]


def test_diff_paths_quote_dotted_names() -> None:
    assert kinds(diff(S(F("a.b", S())), S(F("a.b", S(F("c", INT)))))) == [(K.NESTED_FIELD_ADDED, "`a.b`.c")]


def test_change_kind_flags_and_aliases() -> None:
    assert {k for k in K if k.breaking} == {K.TYPE_CONFLICT, K.CASE_CLASH, K.DUPLICATE_NAME, K.RESERVED_NAME}
    assert {k for k in K if not k.requires_table_change} == {
        K.COLUMN_MISSING,
        K.NESTED_FIELD_MISSING,
        K.TYPE_NARROWED,
    }
    assert K("type_conflict") is K.TYPE_CONFLICT and str(K.TYPE_CONFLICT) == "type_conflict"
    ok = [
        Change(K.COLUMN_ADDED, "a", None, "int"),
        Change(K.TYPE_NARROWED, "b", "x", "y"),
    ]
    assert is_compatible(ok) and needs_table_change(ok)
    assert not needs_table_change(ok[1:])
    assert not is_compatible([*ok, Change(K.CASE_CLASH, "c", "int", "int", "C")])
    assert is_compatible([]) and not needs_table_change([])


# ------------------------------------------------------------------------- strategies

NAMES = st.sampled_from(["a", "b", "c", "A", "x y", "d.e", "q`"])
MAP_KEYS = st.sampled_from([STRING, INT, LONG])
DECIMALS = st.builds(Decimal, st.sampled_from([5, 10, 18, 38]), st.sampled_from([0, 2]))
ATOMS: st.SearchStrategy[DataType] = st.one_of(
    st.sampled_from([INT, LONG, FLOAT, DOUBLE, VOID]),
    st.sampled_from([BOOLEAN, STRING, BINARY, DATE, TIMESTAMP, TIMESTAMP_NTZ]),
    DECIMALS,
)


def structs(children: st.SearchStrategy[DataType]) -> st.SearchStrategy[Struct]:
    return st.lists(
        st.builds(Field, NAMES, children, st.booleans()),
        max_size=4,
        unique_by=lambda f: f.name,
    ).map(lambda fs: Struct(tuple(fs)))


TYPES: st.SearchStrategy[DataType] = st.recursive(
    ATOMS,
    lambda children: st.one_of(
        structs(children),
        st.builds(Array, children, st.booleans()),
        st.builds(Map, MAP_KEYS, children, st.booleans()),
    ),
    max_leaves=10,
)
SCHEMAS = structs(TYPES)

_FAMILIES: dict[DataType, list[DataType]] = {
    INT: [INT, LONG, VOID],
    LONG: [INT, LONG, VOID],
    FLOAT: [FLOAT, DOUBLE, VOID],
    DOUBLE: [FLOAT, DOUBLE, VOID],
}


@st.composite
def related(draw: st.DrawFn, t: DataType) -> DataType:
    """A type that usually merges with ``t``: same shape, promoted/narrowed leaves,
    dropped/added fields, flipped nullability; sometimes anything at all."""
    if draw(st.integers(0, 11)) == 0:
        return draw(TYPES)
    if isinstance(t, Struct):
        return draw(related_struct(t))
    if isinstance(t, Array):
        return Array(draw(related(t.element)), draw(st.booleans()))
    if isinstance(t, Map):
        return Map(t.key, draw(related(t.value)), draw(st.booleans()))
    if isinstance(t, Decimal):
        return Decimal(draw(st.sampled_from([5, 10, 18, 38])), t.scale)
    return draw(st.sampled_from(_FAMILIES.get(t, [t, VOID])))


@st.composite
def related_struct(draw: st.DrawFn, s: Struct) -> Struct:
    fields = [
        Field(f.name, draw(related(f.type)), draw(st.booleans())) for f in s.fields if draw(st.integers(0, 4)) > 0
    ]
    fields += draw(st.lists(st.builds(Field, NAMES, TYPES, st.booleans()), max_size=2))
    unique: dict[str, Field] = {}
    for f in fields:
        unique.setdefault(f.name, f)
    return Struct(tuple(draw(st.permutations(list(unique.values())))))


RELATED_PAIRS = SCHEMAS.flatmap(lambda a: st.tuples(st.just(a), related_struct(a)))
PAIRS = st.one_of(RELATED_PAIRS, RELATED_PAIRS, st.tuples(SCHEMAS, SCHEMAS))


@st.composite
def triples(draw: st.DrawFn) -> tuple[Struct, Struct, Struct]:
    a = draw(SCHEMAS)
    b = draw(related_struct(a))
    c = draw(related_struct(draw(st.sampled_from([a, b]))))
    return a, b, c


# ------------------------------------------------------------------------- oracles


def fits(x: DataType, y: DataType) -> bool:
    """Independent restatement: can data of type ``x`` be stored in ``y`` unchanged?"""
    if x == y or x is VOID:
        return True
    if isinstance(x, Decimal) and isinstance(y, Decimal):
        return x.scale == y.scale and x.precision <= y.precision
    if (x, y) in {(INT, LONG), (FLOAT, DOUBLE)}:
        return True
    if isinstance(x, Array) and isinstance(y, Array):
        return fits(x.element, y.element) and (y.contains_null or not x.contains_null)
    if isinstance(x, Map) and isinstance(y, Map):
        return x.key == y.key and fits(x.value, y.value) and (y.value_contains_null or not x.value_contains_null)
    if isinstance(x, Struct) and isinstance(y, Struct):
        xs, ys = {f.name: f for f in x.fields}, {f.name: f for f in y.fields}
        for n, xf in xs.items():
            yf = ys.get(n)
            if yf is None or not fits(xf.type, yf.type) or (xf.nullable and not yf.nullable):
                return False
        if any(not yf.nullable for n, yf in ys.items() if n not in xs):
            return False
        # Case clash: an x name and a y name equal ignoring case, one of them unmatched.
        return not any(u.lower() == o.lower() and u != o and (u not in ys or o not in xs) for u in xs for o in ys)
    return False


def shape(t: DataType) -> object:
    """A representation of ``t`` that ignores struct field order."""
    if isinstance(t, Struct):
        return frozenset((f.name, shape(f.type), f.nullable) for f in t.fields)
    if isinstance(t, Array):
        return ("array", shape(t.element), t.contains_null)
    if isinstance(t, Map):
        return ("map", shape(t.key), shape(t.value), t.value_contains_null)
    return t


def loosen(t: DataType, *, fields_too: bool) -> DataType:
    """Set every nullability flag that the textual form cannot carry to True."""
    if isinstance(t, Struct):
        return Struct(
            tuple(
                Field(
                    f.name,
                    loosen(f.type, fields_too=fields_too),
                    f.nullable or fields_too,
                )
                for f in t.fields
            )
        )
    if isinstance(t, Array):
        return Array(loosen(t.element, fields_too=fields_too), True)
    if isinstance(t, Map):
        return Map(loosen(t.key, fields_too=fields_too), loosen(t.value, fields_too=fields_too))
    return t


def try_merge(a: Struct, b: Struct) -> Struct | None:
    try:
        return merge(a, b)
    except SchemaConflict:
        return None


PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------- properties


@PROPS
@given(PAIRS)
def test_prop_can_merge_agrees_with_merge_and_diff(ab: tuple[Struct, Struct]) -> None:
    a, b = ab
    changes = diff(a, b)
    try:
        merge(a, b)
    except SchemaConflict as exc:
        assert not can_merge(a, b)
        assert exc.changes == [c for c in changes if c.breaking] != []
    else:
        assert can_merge(a, b)
        assert is_compatible(changes)


@PROPS
@given(PAIRS)
def test_prop_merge_commutative_up_to_field_order(ab: tuple[Struct, Struct]) -> None:
    a, b = ab
    assert can_merge(a, b) == can_merge(b, a)
    m1, m2 = try_merge(a, b), try_merge(b, a)
    if m1 is not None and m2 is not None:
        assert shape(m1) == shape(m2)
        new = [n for n in b.names if a.field(n) is None]
        assert m1.names == a.names + tuple(new)


@PROPS
@given(SCHEMAS)
def test_prop_merge_idempotent(a: Struct) -> None:
    assert merge(a, a) == a
    assert diff(a, a) == []


@PROPS
@given(triples())
def test_prop_merge_associative_where_defined(
    abc: tuple[Struct, Struct, Struct],
) -> None:
    a, b, c = abc
    ab, bc = try_merge(a, b), try_merge(b, c)
    left = try_merge(ab, c) if ab is not None else None
    right = try_merge(a, bc) if bc is not None else None
    if left is not None and right is not None:
        assert left == right


@PROPS
@given(PAIRS)
def test_prop_merge_holds_both_and_never_narrows(ab: tuple[Struct, Struct]) -> None:
    a, b = ab
    m = try_merge(a, b)
    if m is None:
        return
    assert fits(a, m) and fits(b, m)
    assert set(m.names) == set(a.names) | set(b.names)
    for f in m.fields:
        if a.field(f.name) is None or b.field(f.name) is None:
            assert f.nullable, f"{f.name} is on one side only and must be nullable"
    # merge(a, b) is the table after evolution: neither input needs a further change.
    for side in (a, b):
        assert not needs_table_change(diff(m, side))
    assert is_compatible(diff(a, m))


@PROPS
@given(PAIRS)
def test_prop_diff_flags_match_fits(ab: tuple[Struct, Struct]) -> None:
    table, file = ab
    changes = diff(table, file)
    assert needs_table_change(changes) is not fits(file, table)
    if fits(file, table):
        assert merge(table, file) == table
    m = try_merge(table, file)
    if m is not None:
        assert (m == table) is not needs_table_change(changes)


@PROPS
@given(SCHEMAS)
def test_prop_spark_json_round_trip(s: Struct) -> None:
    obj = to_spark_json(s)
    assert from_spark_json(json.dumps(obj)) == s
    assert to_spark_json(from_spark_json(obj)) == obj


@PROPS
@given(SCHEMAS)
def test_prop_pyspark_agrees_with_json(s: Struct) -> None:
    types = pytest.importorskip("pyspark.sql.types")
    obj = to_spark_json(s)
    spark = types.StructType.fromJson(obj)
    assert spark.jsonValue() == obj
    assert from_spark_json(spark.json()) == s


@PROPS
@given(SCHEMAS)
def test_prop_ddl_and_type_string_round_trip(s: Struct) -> None:
    assert parse_ddl(to_ddl(s)) == loosen(s, fields_too=False)
    assert parse_type(type_string(s)) == loosen(s, fields_too=True)


def test_policy_quarantines_a_file_that_spells_one_field_twice() -> None:
    from worker.domain.policy import Policy, duplicate_names, plan_batch

    table = Struct((Field("a", LONG),))
    clash = Struct((Field("a", LONG), Field("A", LONG), Field("s", Struct((Field("x", INT), Field("X", INT))))))
    changes = duplicate_names(clash)
    assert [(c.kind, c.path, c.table_path) for c in changes] == [
        (K.DUPLICATE_NAME, "A", "a"),
        (K.DUPLICATE_NAME, "s.X", "s.x"),
    ]
    assert str(changes[0]) == "duplicate name at A: the file also has a (names differ only in case)"
    plan = plan_batch(Policy.EVOLVE, table, [(1, clash), (2, table)])
    assert [d.load for d in plan.decisions.values()] == [False, True] and plan.target == table


def test_policy_ignores_columns_in_which_only_nulls_were_seen() -> None:
    from worker.domain.policy import Policy, drop_void, plan_batch

    header_only = Struct((Field("name", VOID), Field("age", VOID)))
    assert drop_void(header_only) == Struct(())
    nested = Struct((Field("s", Struct((Field("v", VOID), Field("k", INT)))),))
    assert drop_void(nested) == Struct((Field("s", Struct((Field("k", INT),))),))
    first = plan_batch(Policy.EVOLVE, None, [(1, header_only)])
    assert first.target == Struct(()) and first.decisions[1].load
    later = plan_batch(Policy.EVOLVE, first.target, [(2, Struct((Field("name", STRING),)))])
    assert later.target == Struct((Field("name", STRING),))


def test_every_refusal_and_comparison_matches_its_snapshot() -> None:
    """The message of each refused schema or type, and each pair's changes and merge, in full
    (tests/unit/schema_snapshot.py); after a deliberate change:
    ``python -m tests.unit.schema_snapshot``."""
    from tests.unit.schema_snapshot import SNAPSHOT, snapshot
    from tests.unit.snapshot_check import assert_matches

    assert_matches(SNAPSHOT, snapshot())
