"""Schema algebra for Iceberg-bound tables: a typed model, Spark JSON/DDL, merge and diff.

Pure domain code: no I/O, no logging, no clock.

The model
---------
``DataType`` is one of ``Primitive`` (an enum: boolean, int, long, float, double,
string, binary, date, timestamp, timestamp_ntz, void), ``Decimal(precision, scale)``,
``Struct(fields)`` of ``Field(name, type, nullable)``, ``Array(element, contains_null)``
and ``Map(key, value, value_contains_null)``. All are frozen and hashable.
``void`` is what Spark infers for a column in which only nulls were seen.

Conversions
-----------
``from_spark_json`` / ``to_spark_json`` read and write what pyspark 4.0's
``StructType.jsonValue()`` / ``DataFrame.schema.json()`` produce. ``to_ddl`` /
``parse_ddl`` write and read Spark DDL column lists; ``parse_type`` reads a single
type such as ``decimal(18,2)`` or ``array<struct<a:int>>`` (user schema hints) and
``type_string`` writes one (Spark's ``simpleString`` form, used in messages).

Merge and diff
--------------
``merge(a, b)`` is the least schema that holds both, using only Iceberg's legal type
promotions (int→long, float→double, decimal(p,s)→decimal(p',s) with p' ≥ p, void→any).
``diff(table, incoming)`` classifies every difference between a table's schema and an
incoming file's schema as a ``Change``. Both are computed by a single walk
(``_reconcile``) so they cannot disagree: ``merge`` raises ``SchemaConflict`` exactly
when ``diff`` reports a breaking change, and when it does not raise, its result equals
the table schema exactly when no change has ``requires_table_change``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final, TypeAlias

__all__ = [
    "BINARY",
    "BOOLEAN",
    "DATE",
    "DOUBLE",
    "FLOAT",
    "INT",
    "LONG",
    "STRING",
    "TIMESTAMP",
    "TIMESTAMP_NTZ",
    "VOID",
    "Array",
    "Change",
    "ChangeKind",
    "DataType",
    "Decimal",
    "Field",
    "Map",
    "Primitive",
    "SchemaConflict",
    "SchemaError",
    "Struct",
    "can_merge",
    "diff",
    "from_spark_json",
    "is_compatible",
    "merge",
    "needs_table_change",
    "parse_ddl",
    "parse_type",
    "to_ddl",
    "to_spark_json",
    "type_string",
]


# --------------------------------------------------------------------------- errors


class SchemaError(ValueError):
    """A schema (JSON, DDL, type hint, or model value) is malformed or unsupported."""


class SchemaConflict(SchemaError):
    """Two schemas cannot be merged; ``changes`` lists every breaking change found."""

    def __init__(self, changes: Sequence[Change]) -> None:
        self.changes: list[Change] = list(changes)
        super().__init__("schema conflict: " + "; ".join(str(c) for c in self.changes))


# --------------------------------------------------------------------------- model


class Primitive(Enum):
    """Atomic types. Values are the Spark JSON type names."""

    BOOLEAN = "boolean"
    INT = "integer"  # 32-bit
    LONG = "long"
    FLOAT = "float"
    DOUBLE = "double"
    STRING = "string"
    BINARY = "binary"
    DATE = "date"
    TIMESTAMP = "timestamp"  # with time zone (Spark TimestampType, Iceberg timestamptz)
    TIMESTAMP_NTZ = "timestamp_ntz"
    VOID = "void"  # only nulls seen (Spark NullType)


BOOLEAN: Final = Primitive.BOOLEAN
INT: Final = Primitive.INT
LONG: Final = Primitive.LONG
FLOAT: Final = Primitive.FLOAT
DOUBLE: Final = Primitive.DOUBLE
STRING: Final = Primitive.STRING
BINARY: Final = Primitive.BINARY
DATE: Final = Primitive.DATE
TIMESTAMP: Final = Primitive.TIMESTAMP
TIMESTAMP_NTZ: Final = Primitive.TIMESTAMP_NTZ
VOID: Final = Primitive.VOID

MAX_DECIMAL_PRECISION: Final = 38


@dataclass(frozen=True, slots=True)
class Decimal:
    """Fixed-point decimal; 1 ≤ precision ≤ 38 and 0 ≤ scale ≤ precision."""

    precision: int
    scale: int

    def __post_init__(self) -> None:
        if not 1 <= self.precision <= MAX_DECIMAL_PRECISION:
            raise SchemaError(f"decimal precision must be 1..38, got {self.precision}")
        if not 0 <= self.scale <= self.precision:
            raise SchemaError(f"decimal scale must be 0..precision ({self.precision}), got {self.scale}")


@dataclass(frozen=True, slots=True)
class Field:
    """A named struct field."""

    name: str
    type: DataType
    nullable: bool = True


@dataclass(frozen=True, slots=True)
class Struct:
    """An ordered struct; field names are unique (exact, case-sensitive comparison)."""

    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        dup = _first_duplicate(f.name for f in self.fields)
        if dup is not None:
            raise SchemaError(f"duplicate field name {dup!r} in struct")

    def field(self, name: str) -> Field | None:
        """The field named exactly ``name``, or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True, slots=True)
class Array:
    element: DataType
    contains_null: bool = True


@dataclass(frozen=True, slots=True)
class Map:
    key: DataType
    value: DataType
    value_contains_null: bool = True


DataType: TypeAlias = Primitive | Decimal | Struct | Array | Map


def _first_duplicate(names: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


# --------------------------------------------------------------------------- type strings

_SIMPLE_NAMES: Final[Mapping[Primitive, str]] = {
    BOOLEAN: "boolean",
    INT: "int",
    LONG: "bigint",
    FLOAT: "float",
    DOUBLE: "double",
    STRING: "string",
    BINARY: "binary",
    DATE: "date",
    TIMESTAMP: "timestamp",
    TIMESTAMP_NTZ: "timestamp_ntz",
    VOID: "void",
}

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _quote_if_needed(name: str) -> str:
    return name if _PLAIN_NAME.match(name) else _quote(name)


def type_string(t: DataType) -> str:
    """Spark's ``simpleString`` form (``bigint``, ``struct<a:int>``); nullability is
    not shown. Field names that are not plain identifiers are backtick-quoted, so
    ``parse_type`` reads the result back."""
    if isinstance(t, Primitive):
        return _SIMPLE_NAMES[t]
    if isinstance(t, Decimal):
        return f"decimal({t.precision},{t.scale})"
    if isinstance(t, Array):
        return f"array<{type_string(t.element)}>"
    if isinstance(t, Map):
        return f"map<{type_string(t.key)},{type_string(t.value)}>"
    inner = ",".join(f"{_quote_if_needed(f.name)}:{type_string(f.type)}" for f in t.fields)
    return f"struct<{inner}>"


# --------------------------------------------------------------------------- Spark JSON

_FROM_JSON_NAME: Final[Mapping[str, Primitive]] = {
    **{p.value: p for p in Primitive},
    "byte": INT,
    "short": INT,
}
_JSON_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)\Z")
_JSON_CHAR = re.compile(r"(?:var)?char\(\s*\d+\s*\)\Z")


def _where(path: str) -> str:
    return path or "<root>"


def _join(path: str, name: str) -> str:
    part = f"`{name.replace('`', '``')}`" if ("." in name or "`" in name) else name
    return f"{path}.{part}" if path else part


def from_spark_json(obj: Mapping[str, Any] | str) -> Struct:
    """Read a Spark schema JSON (``DataFrame.schema.json()`` or its parsed dict).

    ``byte``/``short`` become ``int`` and ``char(n)``/``varchar(n)`` become ``string``
    (Iceberg has neither); field ``metadata`` is ignored. Anything else unknown raises
    ``SchemaError`` naming the path (``a.b``, ``arr.element``, ``m.key``, ``m.value``).
    """
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError as exc:
            raise SchemaError(f"schema is not valid JSON: {exc}") from exc
    t = _type_from_json(obj, "")
    if not isinstance(t, Struct):
        raise SchemaError(f"top-level schema must be a struct, got {type_string(t)}")
    return t


def _json_key(obj: Mapping[str, Any], key: str, path: str) -> object:
    if key not in obj:
        raise SchemaError(f"missing {key!r} at {_where(path)}")
    return obj[key]


def _json_bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = _json_key(obj, key, path)
    if not isinstance(value, bool):
        raise SchemaError(f"{key!r} must be a boolean at {_where(path)}, got {value!r}")
    return value


def _type_from_json(value: object, path: str) -> DataType:
    if isinstance(value, str):
        name = value.strip().lower()
        if name in _FROM_JSON_NAME:
            return _FROM_JSON_NAME[name]
        m = _JSON_DECIMAL.match(name)
        if m:
            return _decimal(int(m.group(1)), int(m.group(2)), path)
        if name == "decimal":
            return Decimal(10, 0)
        if _JSON_CHAR.match(name):
            return STRING
        raise SchemaError(f"unknown type {value!r} at {_where(path)}")
    if not isinstance(value, Mapping):
        raise SchemaError(f"type must be a string or an object at {_where(path)}, got {value!r}")
    kind = _json_key(value, "type", path)
    if kind == "struct":
        raw_fields = _json_key(value, "fields", path)
        if not isinstance(raw_fields, list):
            raise SchemaError(f"'fields' must be a list at {_where(path)}")
        fields: list[Field] = []
        for raw in raw_fields:
            if not isinstance(raw, Mapping):
                raise SchemaError(f"struct field must be an object at {_where(path)}")
            fname = _json_key(raw, "name", path)
            if not isinstance(fname, str):
                raise SchemaError(f"field name must be a string at {_where(path)}")
            fpath = _join(path, fname)
            ftype = _type_from_json(_json_key(raw, "type", fpath), fpath)
            fields.append(Field(fname, ftype, _json_bool(raw, "nullable", fpath)))
        dup = _first_duplicate(f.name for f in fields)
        if dup is not None:
            raise SchemaError(f"duplicate field name {dup!r} at {_where(path)}")
        return Struct(tuple(fields))
    if kind == "array":
        epath = _join(path, "element")
        element = _type_from_json(_json_key(value, "elementType", path), epath)
        return Array(element, _json_bool(value, "containsNull", path))
    if kind == "map":
        key = _type_from_json(_json_key(value, "keyType", path), _join(path, "key"))
        val = _type_from_json(_json_key(value, "valueType", path), _join(path, "value"))
        return Map(key, val, _json_bool(value, "valueContainsNull", path))
    raise SchemaError(f"unknown type {kind!r} at {_where(path)}")


def _decimal(precision: int, scale: int, where: str) -> Decimal:
    try:
        return Decimal(precision, scale)
    except SchemaError as exc:
        raise SchemaError(f"{exc} at {_where(where)}") from None


def to_spark_json(s: Struct) -> dict[str, Any]:
    """The dict pyspark's ``StructType.jsonValue()`` would give (``metadata`` empty)."""
    out = _type_to_json(s)
    assert isinstance(out, dict)
    return out


def _type_to_json(t: DataType) -> str | dict[str, Any]:
    if isinstance(t, Primitive):
        return t.value
    if isinstance(t, Decimal):
        return f"decimal({t.precision},{t.scale})"
    if isinstance(t, Array):
        return {
            "type": "array",
            "elementType": _type_to_json(t.element),
            "containsNull": t.contains_null,
        }
    if isinstance(t, Map):
        return {
            "type": "map",
            "keyType": _type_to_json(t.key),
            "valueType": _type_to_json(t.value),
            "valueContainsNull": t.value_contains_null,
        }
    return {
        "type": "struct",
        "fields": [
            {
                "name": f.name,
                "type": _type_to_json(f.type),
                "nullable": f.nullable,
                "metadata": {},
            }
            for f in t.fields
        ],
    }


# --------------------------------------------------------------------------- DDL

_DDL_NAMES: Final[Mapping[Primitive, str]] = {p: n.upper() for p, n in _SIMPLE_NAMES.items()}


def to_ddl(s: Struct) -> str:
    """Spark DDL column list, e.g. ```a` BIGINT NOT NULL, `b` STRUCT<`c`: STRING>``.

    Every name is backtick-quoted (backticks doubled). DDL cannot express
    ``containsNull``/``valueContainsNull``; ``parse_ddl`` reads them back as true.
    """
    return ", ".join(f"{_quote(f.name)} {_ddl_type(f.type)}{_not_null(f)}" for f in s.fields)


def _not_null(f: Field) -> str:
    return "" if f.nullable else " NOT NULL"


def _ddl_type(t: DataType) -> str:
    if isinstance(t, Primitive):
        return _DDL_NAMES[t]
    if isinstance(t, Decimal):
        return f"DECIMAL({t.precision},{t.scale})"
    if isinstance(t, Array):
        return f"ARRAY<{_ddl_type(t.element)}>"
    if isinstance(t, Map):
        return f"MAP<{_ddl_type(t.key)}, {_ddl_type(t.value)}>"
    inner = ", ".join(f"{_quote(f.name)}: {_ddl_type(f.type)}{_not_null(f)}" for f in t.fields)
    return f"STRUCT<{inner}>"


# --------------------------------------------------------------------------- parsing hints / DDL

_TYPE_ALIASES: Final[Mapping[str, Primitive]] = {
    "boolean": BOOLEAN,
    "bool": BOOLEAN,
    "tinyint": INT,
    "byte": INT,
    "smallint": INT,
    "short": INT,
    "int": INT,
    "integer": INT,
    "bigint": LONG,
    "long": LONG,
    "float": FLOAT,
    "real": FLOAT,
    "double": DOUBLE,
    "string": STRING,
    "text": STRING,
    "binary": BINARY,
    "date": DATE,
    "timestamp": TIMESTAMP,
    "timestamp_ltz": TIMESTAMP,
    "timestamp_ntz": TIMESTAMP_NTZ,
    "void": VOID,
    "null": VOID,
}
_DECIMAL_NAMES: Final = frozenset({"decimal", "dec", "numeric"})
_CHAR_NAMES: Final = frozenset({"char", "varchar", "character"})

_TOKEN = re.compile(r"\s*(?:(`(?:[^`]|``)*`)|([A-Za-z0-9_]+)|([<>(),:]))")


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str
    quoted: bool  # a backtick-quoted name (text is unquoted)


class _Parser:
    """Recursive-descent parser over a token list; every error names the input."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[_Tok] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if m is None:
                raise self.error(f"unexpected character {stripped[pos:].lstrip()[:1]!r}")
            if m.group(1) is not None:
                self.toks.append(_Tok(m.group(1)[1:-1].replace("``", "`"), True))
            else:
                self.toks.append(_Tok(m.group(2) or m.group(3), False))
            pos = m.end()
        self.i = 0

    def error(self, msg: str) -> SchemaError:
        return SchemaError(f"cannot parse type {self.text!r}: {msg}")

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error(f"expected {what}, got end of input")
        self.i += 1
        return tok

    def at(self, punct: str) -> bool:
        tok = self.peek()
        return tok is not None and not tok.quoted and tok.text.lower() == punct

    def expect(self, punct: str) -> None:
        tok = self.next(repr(punct))
        if tok.quoted or tok.text.lower() != punct:
            raise self.error(f"expected {punct!r}, got {tok.text!r}")

    def accept(self, punct: str) -> bool:
        if self.at(punct):
            self.i += 1
            return True
        return False

    def number(self) -> int:
        tok = self.next("a number")
        if tok.quoted or not tok.text.isdigit():
            raise self.error(f"expected a number, got {tok.text!r}")
        return int(tok.text)

    def end(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected {tok.text!r}")

    def data_type(self) -> DataType:
        tok = self.next("a type")
        name = tok.text.lower()
        if tok.quoted:
            raise self.error(f"expected a type, got quoted name {tok.text!r}")
        if name == "array":
            self.expect("<")
            element = self.data_type()
            self.expect(">")
            return Array(element)
        if name == "map":
            self.expect("<")
            key = self.data_type()
            self.expect(",")
            value = self.data_type()
            self.expect(">")
            return Map(key, value)
        if name == "struct":
            self.expect("<")
            fields = [] if self.at(">") else self.fields()
            self.expect(">")
            return self.struct(fields)
        if name in _DECIMAL_NAMES:
            precision, scale = 10, 0
            if self.accept("("):
                precision = self.number()
                if self.accept(","):
                    scale = self.number()
                self.expect(")")
            try:
                return Decimal(precision, scale)
            except SchemaError as exc:
                raise self.error(str(exc)) from None
        if name in _CHAR_NAMES:
            if self.accept("("):
                self.number()
                self.expect(")")
            return STRING
        if name in _TYPE_ALIASES:
            return _TYPE_ALIASES[name]
        raise self.error(f"unknown type {tok.text!r}")

    def fields(self) -> list[Field]:
        fields = [self.one_field()]
        while self.accept(","):
            fields.append(self.one_field())
        return fields

    def one_field(self) -> Field:
        """``name[:] type [NOT NULL]``; the colon is optional (Spark accepts both)."""
        tok = self.next("a field name")
        if not tok.quoted and not re.fullmatch(r"[A-Za-z0-9_]+", tok.text):
            raise self.error(f"expected a field name, got {tok.text!r}")
        self.accept(":")
        ftype = self.data_type()
        nullable = True
        if self.accept("not"):
            self.expect("null")
            nullable = False
        return Field(tok.text, ftype, nullable)

    def struct(self, fields: list[Field]) -> Struct:
        dup = _first_duplicate(f.name for f in fields)
        if dup is not None:
            raise self.error(f"duplicate field name {dup!r}")
        return Struct(tuple(fields))


def parse_type(text: str) -> DataType:
    """Parse one type hint such as ``decimal(18,2)``, ``BIGINT``, ``array<string>``,
    ``map<string,int>`` or ``struct<a:int,b:string>`` (case-insensitive).

    Aliases: bigint/long; int/integer/smallint/short/tinyint/byte → int;
    float/real; boolean/bool; timestamp/timestamp_ltz (with time zone);
    timestamp_ntz; char(n)/varchar(n)/text → string; void/null; decimal/dec/numeric
    with optional ``(p)`` or ``(p,s)`` (default ``(10,0)``). Struct fields may be
    written ``name:type`` or ``name type``, optionally followed by ``NOT NULL``;
    names may be backtick-quoted. Arrays and map values parse as nullable.
    """
    p = _Parser(text)
    t = p.data_type()
    p.end()
    return t


def parse_ddl(text: str) -> Struct:
    """Parse a Spark DDL column list (``a BIGINT NOT NULL, `b c` STRING``), the
    inverse of ``to_ddl`` up to array/map element nullability."""
    p = _Parser(text)
    fields = [] if p.peek() is None else p.fields()
    p.end()
    return p.struct(fields)


# --------------------------------------------------------------------------- changes


class ChangeKind(StrEnum):
    """How an incoming (file) schema differs from a table schema at one path.

    ``breaking``: the table would need a change Iceberg does not allow, so an
    ``evolve`` policy must reject (or quarantine) the file.
    ``requires_table_change``: the file cannot be appended to the table as it is.
    Every breaking kind also requires a table change (an impossible one).

    An ``evolve`` policy therefore: rejects the file if any change is breaking
    (``not is_compatible(changes)``); otherwise, if ``needs_table_change(changes)``,
    evolves the table to ``merge(table, file)`` (only legal Iceberg updates: add
    optional columns/fields, widen int→long / float→double / decimal precision /
    void→any, make a required column optional) and appends. TYPE_NARROWED is not
    breaking: the file's int values fit the table's long column unchanged.
    CASE_CLASH is breaking because Iceberg names are case-sensitive but Spark
    resolves columns case-insensitively, so ``Price`` beside ``price`` is ambiguous,
    and renaming is not schema evolution.

    ===================== ======== ============= ======================================
    kind                  breaking table change meaning
    ===================== ======== ============= ======================================
    COLUMN_ADDED          no       yes           top-level column only in the file;
                                                 added to the table as nullable
    NESTED_FIELD_ADDED    no       yes           same, inside a struct (also inside
                                                 array elements / map values)
    COLUMN_MISSING        no       no            top-level column only in the table;
                                                 read as null (a required column
                                                 also gets NULLABILITY_CHANGED)
    NESTED_FIELD_MISSING  no       no            same, inside a struct
    TYPE_WIDENED          no       yes           the file's type is WIDER than the
                                                 table's via a legal promotion
                                                 (table int, file long; table void):
                                                 the table column must be widened
                                                 ("table must widen")
    TYPE_NARROWED         no       no            the file's type is NARROWER than the
                                                 table's (table long, file int; file
                                                 void): its values fit the table
                                                 as is ("file type fits table")
    NULLABILITY_CHANGED   no       yes           the table is required (NOT NULL)
                                                 where the file is nullable or the
                                                 field is absent: the table must be
                                                 relaxed to optional. (Table nullable,
                                                 file non-null is not a change.)
    TYPE_CONFLICT         YES      yes           no legal promotion either way (int vs
                                                 double, decimal scales differ, map
                                                 keys differ, struct vs primitive, …)
    CASE_CLASH            YES      yes           a table and a file field differ only
                                                 in letter case: ambiguous in Spark
                                                 (case-insensitive resolution)
    DUPLICATE_NAME        YES      yes           one file spells a field twice,
                                                 differing only in case
    RESERVED_NAME         YES      yes           a file's top-level column has the name
                                                 of one of icefeed's own columns
                                                 (``_source_file``, ``_batch_id``,
                                                 ``_ingested_at``, ``_rescued_data``),
                                                 compared ignoring case
    ===================== ======== ============= ======================================
    """

    COLUMN_ADDED = "column_added"
    NESTED_FIELD_ADDED = "nested_field_added"
    COLUMN_MISSING = "column_missing"
    NESTED_FIELD_MISSING = "nested_field_missing"
    TYPE_WIDENED = "type_widened"
    TYPE_NARROWED = "type_narrowed"
    NULLABILITY_CHANGED = "nullability_changed"
    TYPE_CONFLICT = "type_conflict"
    CASE_CLASH = "case_clash"
    DUPLICATE_NAME = "duplicate_name"  # one file spells a field twice, differing only in case
    RESERVED_NAME = "reserved_name"  # a file column named like one of icefeed's own (ignoring case)

    @property
    def breaking(self) -> bool:
        return self in _BREAKING

    @property
    def requires_table_change(self) -> bool:
        return self not in _NO_TABLE_CHANGE


_BREAKING: Final = frozenset(
    {ChangeKind.TYPE_CONFLICT, ChangeKind.CASE_CLASH, ChangeKind.DUPLICATE_NAME, ChangeKind.RESERVED_NAME}
)
_NO_TABLE_CHANGE: Final = frozenset(
    {
        ChangeKind.COLUMN_MISSING,
        ChangeKind.NESTED_FIELD_MISSING,
        ChangeKind.TYPE_NARROWED,
    }
)
_HINTS: Final[Mapping[ChangeKind, str]] = {
    ChangeKind.TYPE_WIDENED: "table must widen",
    ChangeKind.TYPE_NARROWED: "file type fits table",
    ChangeKind.NULLABILITY_CHANGED: "table must become nullable",
    ChangeKind.COLUMN_MISSING: "read as null",
    ChangeKind.NESTED_FIELD_MISSING: "read as null",
}


@dataclass(frozen=True, slots=True)
class Change:
    """One classified difference at ``path`` (dotted: ``a.b``, ``arr.element.c``,
    ``m.value.x``; names containing ``.`` or a backtick are backtick-quoted).

    ``table_type``/``incoming_type`` are ``type_string`` forms, or None on the side
    where the field is absent. For NULLABILITY_CHANGED they are ``"not null"`` and
    ``"nullable"``/``"absent"``. For CASE_CLASH ``path`` is the file's spelling and
    ``table_path`` the table's.
    """

    kind: ChangeKind
    path: str
    table_type: str | None
    incoming_type: str | None
    table_path: str | None = None

    @property
    def breaking(self) -> bool:
        return self.kind.breaking

    @property
    def requires_table_change(self) -> bool:
        return self.kind.requires_table_change

    def __str__(self) -> str:
        label = self.kind.value.replace("_", " ")
        if self.kind is ChangeKind.DUPLICATE_NAME:
            return f"{label} at {self.path}: the file also has {self.table_path} (names differ only in case)"
        if self.kind is ChangeKind.RESERVED_NAME:
            return (
                f"{label} at {self.path}: icefeed writes its own column {self.table_path} (names compare ignoring "
                "case); rename the column in the file"
            )
        if self.kind is ChangeKind.CASE_CLASH:
            return (
                f"{label} at {self.path}: {self.table_path} {self.table_type} (table)"
                f" vs {self.path} {self.incoming_type} (file)"
            )
        sides = []
        if self.table_type is not None:
            sides.append(f"{self.table_type} (table)")
        if self.incoming_type is not None:
            sides.append(f"{self.incoming_type} (file)")
        text = f"{label} at {self.path}: " + " vs ".join(sides)
        hint = _HINTS.get(self.kind)
        return f"{text}; {hint}" if hint else text


def is_compatible(changes: Iterable[Change]) -> bool:
    """True when no change is breaking (an ``evolve`` policy can absorb them all)."""
    return not any(c.breaking for c in changes)


def needs_table_change(changes: Iterable[Change]) -> bool:
    """True when the table schema must change before the file can be appended."""
    return any(c.requires_table_change for c in changes)


# --------------------------------------------------------------------------- the walk

_PROMOTIONS: Final = frozenset({(INT, LONG), (FLOAT, DOUBLE)})  # (narrow, wide)


def diff(table: Struct, incoming: Struct) -> list[Change]:
    """Every difference between ``table`` and ``incoming``, in a stable order
    (table fields in table order, each followed by its nested changes, then fields
    only in the file). Equal schemas give ``[]``. See ``ChangeKind``."""
    out: list[Change] = []
    _reconcile(table, incoming, "", out)
    return out


def merge(a: Struct, b: Struct) -> Struct:
    """The least schema holding both ``a`` and ``b`` (see module docstring).

    Columns: a's in a's order, then b's new ones in b's order. Fields present on only
    one side, and all new columns, are nullable; otherwise nullable = a or b.
    Raises ``SchemaConflict`` listing every breaking change (as ``diff(a, b)``
    would classify them, with ``a`` labelled the table and ``b`` the file).
    A case clash is a field of one side equal to a field of the other ignoring case
    but not exactly, where at least one of the two has no exact match on the other
    side; a struct that already holds both ``a`` and ``A`` merges with itself.
    """
    out: list[Change] = []
    merged = _reconcile(a, b, "", out)
    conflicts = [c for c in out if c.breaking]
    if conflicts:
        raise SchemaConflict(conflicts)
    assert isinstance(merged, Struct)
    return merged


def can_merge(a: Struct, b: Struct) -> bool:
    """Whether ``merge(a, b)`` succeeds."""
    return is_compatible(diff(a, b))


def _reconcile(t: DataType, f: DataType, path: str, out: list[Change]) -> DataType:
    """Return the least type holding table type ``t`` and file type ``f``, appending
    the changes found to ``out``. On a conflict the result is a placeholder (``t``)
    and a breaking change is recorded; callers must check ``out``."""
    if t == f:
        return t
    if t is VOID:
        out.append(Change(ChangeKind.TYPE_WIDENED, path, type_string(t), type_string(f)))
        return f
    if f is VOID:
        out.append(Change(ChangeKind.TYPE_NARROWED, path, type_string(t), type_string(f)))
        return t
    if isinstance(t, Struct) and isinstance(f, Struct):
        return _reconcile_struct(t, f, path, out)
    if isinstance(t, Array) and isinstance(f, Array):
        epath = _join(path, "element")
        element = _reconcile(t.element, f.element, epath, out)
        if f.contains_null and not t.contains_null:
            out.append(_relax(epath, "nullable"))
        return Array(element, t.contains_null or f.contains_null)
    if isinstance(t, Map) and isinstance(f, Map):
        if t.key != f.key:
            kpath = _join(path, "key")
            out.append(
                Change(
                    ChangeKind.TYPE_CONFLICT,
                    kpath,
                    type_string(t.key),
                    type_string(f.key),
                )
            )
        vpath = _join(path, "value")
        value = _reconcile(t.value, f.value, vpath, out)
        if f.value_contains_null and not t.value_contains_null:
            out.append(_relax(vpath, "nullable"))
        return Map(t.key, value, t.value_contains_null or f.value_contains_null)
    widened = _promote(t, f)
    if widened is f:
        out.append(Change(ChangeKind.TYPE_WIDENED, path, type_string(t), type_string(f)))
        return f
    if widened is t:
        out.append(Change(ChangeKind.TYPE_NARROWED, path, type_string(t), type_string(f)))
        return t
    out.append(Change(ChangeKind.TYPE_CONFLICT, path, type_string(t), type_string(f)))
    return t


def _promote(t: DataType, f: DataType) -> DataType | None:
    """The wider of two distinct atomic types if one legally promotes to the other."""
    if isinstance(t, Decimal) and isinstance(f, Decimal):
        if t.scale != f.scale:
            return None
        return f if f.precision > t.precision else t
    if (t, f) in _PROMOTIONS:
        return f
    if (f, t) in _PROMOTIONS:
        return t
    return None


def _relax(path: str, incoming: str) -> Change:
    return Change(ChangeKind.NULLABILITY_CHANGED, path, "not null", incoming)


def _reconcile_struct(t: Struct, f: Struct, path: str, out: list[Change]) -> Struct:
    nested = path != ""
    added = ChangeKind.NESTED_FIELD_ADDED if nested else ChangeKind.COLUMN_ADDED
    missing = ChangeKind.NESTED_FIELD_MISSING if nested else ChangeKind.COLUMN_MISSING
    t_names = set(t.names)
    f_by_name = {x.name: x for x in f.fields}
    t_folded = _by_folded_name(t.fields)
    f_folded = _by_folded_name(f.fields)

    def clash(tf: Field, ff: Field) -> Change:
        return Change(
            ChangeKind.CASE_CLASH,
            _join(path, ff.name),
            type_string(tf.type),
            type_string(ff.type),
            table_path=_join(path, tf.name),
        )

    merged: list[Field] = []
    for tf in t.fields:
        fpath = _join(path, tf.name)
        ff = f_by_name.get(tf.name)
        if ff is not None:
            ftype = _reconcile(tf.type, ff.type, fpath, out)
            if ff.nullable and not tf.nullable:
                out.append(_relax(fpath, "nullable"))
            merged.append(Field(tf.name, ftype, tf.nullable or ff.nullable))
            continue
        merged.append(Field(tf.name, tf.type, True))
        others = f_folded.get(tf.name.lower(), [])
        if others:
            # Clashes with file-only fields are reported in the loop below.
            out.extend(clash(tf, x) for x in others if x.name in t_names)
            continue
        out.append(Change(missing, fpath, type_string(tf.type), None))
        if not tf.nullable:
            out.append(_relax(fpath, "absent"))
    for ff in f.fields:
        if ff.name in t_names:
            continue
        others = t_folded.get(ff.name.lower(), [])
        if others:
            out.extend(clash(x, ff) for x in others)
            continue
        out.append(Change(added, _join(path, ff.name), None, type_string(ff.type)))
        merged.append(Field(ff.name, ff.type, True))
    return Struct(tuple(merged))


def _by_folded_name(fields: Iterable[Field]) -> dict[str, list[Field]]:
    out: dict[str, list[Field]] = {}
    for x in fields:
        out.setdefault(x.name.lower(), []).append(x)
    return out
