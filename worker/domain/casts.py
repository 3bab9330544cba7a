"""Whether a JSON value can be cast to a schema hint's type: the check a quarantining route
(bad_records = "quarantine") makes on each record the worker decodes, so that one value that
cannot take its hinted type sets its record aside instead of failing the whole write (Sail fails
the job on such a cast: "Cannot cast string 'abc' to value of Decimal128"). Pure, no I/O.

The rules are the casts the engines make from the values JSON holds (numbers, strings, booleans):
integers within the type's range (strings of digits too), decimals whose integer digits fit
``precision - scale`` once rounded to ``scale``, numbers or numeric strings for floating types,
``true``/``false`` (and Spark's spellings ``t``/``f``/``yes``/``no``/``y``/``n``/``1``/``0``) for
booleans, ISO-8601 dates and timestamps (a space or ``T`` between date and time, an optional zone)
for dates and timestamps. Strings take anything; nested types and binary are not checked.
"""

from __future__ import annotations

import decimal
import re
from datetime import date, datetime
from typing import Any

from worker.domain.schema import (
    BOOLEAN,
    DATE,
    DOUBLE,
    FLOAT,
    INT,
    LONG,
    MAX_DECIMAL_PRECISION,
    TIMESTAMP,
    TIMESTAMP_NTZ,
    DataType,
    Decimal,
    type_string,
)

_RANGES = {INT: (-(2**31), 2**31 - 1), LONG: (-(2**63), 2**63 - 1)}
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_BOOLEAN = {"true", "false", "t", "f", "yes", "no", "y", "n", "1", "0"}
_DATE_PREFIX = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:$|[T ])")


def cast_error(value: Any, want: DataType) -> str | None:
    """Why ``value`` (a parsed JSON value) cannot be cast to ``want``, or None when it can."""
    if value is None or isinstance(value, dict | list):
        return None  # nulls cast to anything; nested values are not checked here
    ok = _castable(value, want)
    if ok:
        return None
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return f"{shown} cannot be cast to {type_string(want)}"


def _castable(value: Any, want: DataType) -> bool:
    if isinstance(want, Decimal):
        return _fits_decimal(value, want)
    if want in _RANGES:
        low, high = _RANGES[want]
        if isinstance(value, bool):
            return True
        if isinstance(value, int):
            return low <= value <= high
        if isinstance(value, float):
            return value == value and low <= value <= high
        return isinstance(value, str) and bool(_INTEGER.match(value)) and low <= int(value) <= high
    if want in (DOUBLE, FLOAT):
        if isinstance(value, bool | int | float):
            return True
        try:
            float(value)
        except ValueError:
            return False
        return True
    if want is BOOLEAN:
        return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in _BOOLEAN)
    if want is DATE:
        return isinstance(value, str) and _date(value)
    if want in (TIMESTAMP, TIMESTAMP_NTZ):
        return (isinstance(value, int | float) and not isinstance(value, bool)) or _timestamp(value)
    return True  # string, binary, nested: not checked


def _fits_decimal(value: Any, want: Decimal) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        return False
    if not number.is_finite():
        return False
    with decimal.localcontext() as context:
        context.prec = 2 * MAX_DECIMAL_PRECISION + 2  # wide enough for any value that could fit
        try:
            rounded = number.quantize(decimal.Decimal(1).scaleb(-want.scale), rounding=decimal.ROUND_HALF_UP)
        except decimal.InvalidOperation:  # more digits than any decimal holds
            return False
    return rounded == 0 or rounded.adjusted() + 1 <= want.precision - want.scale


def _date(text: str) -> bool:
    match = _DATE_PREFIX.match(text)
    if match is None:
        return False
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def _timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return _date(value) and len(value.strip()) <= 10  # a date alone is midnight
    return True
