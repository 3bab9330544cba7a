"""What worker/domain/schema.py says about inputs it refuses and about pairs of schemas it
compares, kept in tests/unit/snapshots/schema.json: the error of each bad Spark JSON schema and
bad DDL type (what an operator reads for a bad schema hint or an engine answer icefeed cannot
use), and for each (table, file) pair the changes found, as printed, and the merged schema.
test_schema.py states the rules; this pins every message and field in full.

    python -m tests.unit.schema_snapshot     # rewrite the snapshot after a deliberate change
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.snapshot_check import write
from worker.domain.schema import SchemaError, diff, from_spark_json, merge, parse_ddl, parse_type, to_ddl

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "schema.json"


def _field(name: str, kind: Any, nullable: Any = True) -> dict[str, Any]:
    return {"name": name, "type": kind, "nullable": nullable, "metadata": {}}


def _struct(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "struct", "fields": list(fields)}


BAD_JSON: dict[str, Any] = {
    "not a struct": {"type": "array", "elementType": "long", "containsNull": True},
    "fields not a list": {"type": "struct", "fields": {}},
    "field not an object": _struct("a"),  # type: ignore[arg-type]
    "field name not a string": _struct(_field(1, "long")),  # type: ignore[arg-type]
    "field without type": _struct({"name": "a", "nullable": True}),
    "nullable not a bool": _struct(_field("a", "long", "yes")),
    "duplicate field": _struct(_field("a", "long"), _field("a", "string")),
    "nested duplicate": _struct(_field("s", _struct(_field("x", "long"), _field("x", "long")))),
    "type a number": _struct(_field("a", 7)),
    "unknown type": _struct(_field("a", "quaternion")),
    "array without element": _struct(_field("a", {"type": "array", "containsNull": True})),
    "array containsNull text": _struct(_field("a", {"type": "array", "elementType": "long", "containsNull": "no"})),
    "map without key": _struct(_field("m", {"type": "map", "valueType": "long", "valueContainsNull": True})),
    "map without value": _struct(_field("m", {"type": "map", "keyType": "string", "valueContainsNull": True})),
    "map valueContainsNull text": _struct(
        _field("m", {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": 1})
    ),
    "object type unknown": _struct(_field("a", {"type": "udt"})),
    "decimal too wide": _struct(_field("a", "decimal(40,2)")),
    "decimal scale over precision": _struct(_field("a", "decimal(5,7)")),
    "not json": "{nope",
    "nested fields not a list": _struct(_field("s", {"type": "struct", "fields": {}})),
    "nested field not an object": _struct(_field("s", {"type": "struct", "fields": [1]})),
    "nested field name not a string": _struct(_field("s", _struct(_field(2, "long")))),  # type: ignore[arg-type]
    "nested field without type": _struct(_field("s", _struct({"name": "x", "nullable": True}))),
    "nested nullable missing": _struct(_field("s", _struct({"name": "x", "type": "long"}))),
    "struct without fields": {"type": "struct"},
    "object type without type": _struct(_field("a", {"elementType": "long"})),
    "nested struct without fields": _struct(_field("s", {"type": "struct"})),
    "nested field without name": _struct(_field("s", _struct({"type": "long", "nullable": True}))),
    "decimal of precision 1": _struct(_field("a", "decimal(1,0)")),
    "decimal of precision 0": _struct(_field("a", "decimal(0,0)")),
}

BAD_DDL = [
    "",
    "quaternion",
    "decimal(10",
    "decimal(x,2)",
    "decimal(40,2)",
    "array<long",
    "array<>",
    "map<string>",
    "map<string,long,int>",
    "struct<a long",
    "struct<a:long,a:string>",
    "struct<`a:long>",
    "struct<1:long>",
    "long)",
    "long extra",
    "`long`",
    "struct<a:long>>",
    "varchar(5",
    "struct<a:long NOT NUL>",
    "decimal(",
    "struct<",
    "struct<a:",
    "struct<>",
    "struct<a:long,>",
    "  struct<a:long> ~",
    "decimal(1,0)",
]

PAIRS = {
    "same": ("a BIGINT NOT NULL, b STRING", "a BIGINT NOT NULL, b STRING"),
    "added and missing": ("a BIGINT, b STRING", "a BIGINT, c DOUBLE"),
    "widened and narrowed": ("a INT, b BIGINT, c FLOAT, d DECIMAL(10,2)", "a BIGINT, b INT, c DOUBLE, d DECIMAL(12,2)"),
    "conflicts": ("a BIGINT, b STRING, c DATE", "a STRING, b ARRAY<STRING>, c BOOLEAN"),
    "nullability": ("a BIGINT NOT NULL, s STRUCT<x: INT NOT NULL>", "a BIGINT, s STRUCT<x: INT>"),
    "nested struct": ("s STRUCT<x: INT, y: STRING>", "s STRUCT<x: BIGINT, z: BOOLEAN>"),
    "arrays": ("l ARRAY<INT>, m ARRAY<STRUCT<k: INT>>", "l ARRAY<BIGINT>, m ARRAY<STRUCT<k: INT, v: STRING>>"),
    "maps": ("m MAP<STRING, INT>, n MAP<STRING, INT>", "m MAP<STRING, BIGINT>, n MAP<INT, INT>"),
    "case only": ("Name STRING, s STRUCT<Inner: INT>", "name STRING, s STRUCT<inner: BIGINT>"),
    "void": ("a BIGINT, v VOID", "a VOID, v STRING"),
    "timestamps": ("t TIMESTAMP, n TIMESTAMP_NTZ, d DATE", "t TIMESTAMP_NTZ, n TIMESTAMP, d TIMESTAMP"),
    "decimals": (
        "d DECIMAL(10,2), e DECIMAL(10,4), f DECIMAL(12,2)",
        "d DECIMAL(10,3), e DECIMAL(12,4), f DECIMAL(12,3)",
    ),
    "quoted names": ("`a.b` INT, `c``d` STRUCT<`e.f`: INT>", "`a.b` BIGINT, `c``d` STRUCT<`e.f`: BIGINT, `g`: INT>"),
    "case in both": ("A INT, b INT", "a INT, B INT, c INT"),
}

# Pairs only the JSON form can state: arrays and maps whose elements or values may not be null.
JSON_PAIRS = {
    "array elements become nullable": (
        _struct(_field("l", {"type": "array", "elementType": "long", "containsNull": False})),
        _struct(_field("l", {"type": "array", "elementType": "long", "containsNull": True})),
    ),
    "map values become nullable": (
        _struct(_field("m", {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": False})),
        _struct(_field("m", {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": True})),
    ),
}


def _error(call: Any) -> str:
    try:
        result = call()
    except SchemaError as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"accepted: {result!r}"


def snapshot() -> dict[str, Any]:
    pairs = {}
    parsed = {name: (parse_ddl(a), parse_ddl(b)) for name, (a, b) in PAIRS.items()}
    parsed |= {name: (from_spark_json(a), from_spark_json(b)) for name, (a, b) in JSON_PAIRS.items()}
    for name, (table, incoming) in parsed.items():
        changes = diff(table, incoming)
        pairs[name] = {
            "changes": [str(c) for c in changes],
            "fields": [[c.kind, c.path, c.table_type, c.incoming_type, c.table_path, c.breaking] for c in changes],
            "merged": _error(lambda t=table, i=incoming: to_ddl(merge(t, i))),
        }
    return {
        "bad spark json": {name: _error(lambda v=value: from_spark_json(v)) for name, value in BAD_JSON.items()},
        "bad ddl types": {text: _error(lambda t=text: parse_type(t)) for text in BAD_DDL},
        "pairs": pairs,
    }


if __name__ == "__main__":
    write(SNAPSHOT, snapshot())
