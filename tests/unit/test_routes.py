"""Unit tests for worker.routes (the routes file) and worker.domain.routing (prefix/suffix rules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.errors import ConfigError
from worker.domain.routing import RouteRule, match_route, overlapping_pairs
from worker.domain.schema import type_string
from worker.routes import (
    CsvIngestion,
    CsvOptions,
    JsonIngestion,
    ParquetIngestion,
    Routes,
    load_routes,
    parse_routes,
)

PROPERTY = settings(max_examples=300, deadline=None, database=None)
SAMPLE_ROUTES = Path(__file__).resolve().parents[2] / "worker" / "samples" / "routes.toml"


# --------------------------------------------------------------------------- helpers


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # a TOML basic string


def toml(*ingestions: dict[str, Any]) -> str:
    out: list[str] = []
    for ing in ingestions:
        out.append("[[ingestion]]")
        out += [f"{k} = {_value(v)}" for k, v in ing.items()]
        out.append("")
    return "\n".join(out)


def ing(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "orders",
        "bucket": "landing-bucket",
        "prefix": "orders/",
        "suffix": ".json",
        "format": "json",
        "table": "glue.sales.orders",
        "location": "s3://warehouse/sales/orders",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def invalid(*ingestions: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routes(toml(*ingestions))
    message = str(info.value)
    assert message.startswith("routes: invalid routes:\n  ")
    return message


# --------------------------------------------------------------------------- valid files


def test_json_route() -> None:
    routes = parse_routes(toml(ing(options={"multiline": True})))
    (route,) = routes.ingestion
    assert isinstance(route, JsonIngestion)
    assert route.name == "orders"
    assert route.bucket == "landing-bucket"
    assert route.prefix == "orders/"
    assert route.suffix == ".json"
    assert route.table == "glue.sales.orders"
    assert route.database == "sales"
    assert route.location == "s3://warehouse/sales/orders"
    assert route.reader_options() == {"multiLine": "true"}
    assert route.rule == RouteRule("orders", "landing-bucket", "orders/", ".json")


def test_json_default_options() -> None:
    (route,) = parse_routes(toml(ing())).ingestion
    assert route.reader_options() == {"multiLine": "false"}


def test_csv_route_options() -> None:
    text = toml(
        ing(
            format="csv",
            suffix=".csv",
            options={"header": False, "delimiter": ";", "quote": "'", "escape": "#", "infer_schema": False},
        )
    )
    (route,) = parse_routes(text).ingestion
    assert isinstance(route, CsvIngestion)
    assert route.reader_options() == {
        "header": "false",
        "sep": ";",
        "quote": "'",
        "escape": "#",
        "inferSchema": "false",
        "multiLine": "false",
    }


def test_csv_default_options() -> None:
    (route,) = parse_routes(toml(ing(format="csv", suffix=".csv"))).ingestion
    assert isinstance(route.options, CsvOptions)
    assert route.reader_options() == {
        "header": "true",
        "sep": ",",
        "quote": '"',
        "escape": "\\",
        "inferSchema": "true",
        "multiLine": "false",
    }


def test_parquet_route() -> None:
    (route,) = parse_routes(toml(ing(format="parquet", suffix=".parquet"))).ingestion
    assert isinstance(route, ParquetIngestion)
    assert route.reader_options() == {}


def test_prefix_and_suffix_default_to_empty() -> None:
    (route,) = parse_routes(toml(ing(prefix=None, suffix=None))).ingestion
    assert route.prefix == ""
    assert route.suffix == ""
    assert route.rule.matches("landing-bucket", "anything/at/all.bin")


def test_location_trailing_slash_is_stripped() -> None:
    (route,) = parse_routes(toml(ing(location="s3://warehouse/sales/orders///"))).ingestion
    assert route.location == "s3://warehouse/sales/orders"


@pytest.mark.parametrize(
    "location",
    ["s3://wh/t", "s3a://wh/t", "gs://wh/t", "abfss://container/t", "file:///tmp/wh/t", "s3://wh/k=v/x-y_z.1"],
)
def test_accepted_locations(location: str) -> None:
    (route,) = parse_routes(toml(ing(location=location))).ingestion
    assert route.location == location


def test_real_abfss_location_is_accepted() -> None:
    location = "abfss://lake@myaccount.dfs.core.windows.net/sales/orders"
    (route,) = parse_routes(toml(ing(location=location))).ingestion
    assert route.location == location


def test_sample_routes_file() -> None:
    routes = load_routes(SAMPLE_ROUTES)
    assert [i.name for i in routes.ingestion] == ["orders", "orders_gz", "customers"]
    assert routes.by_name("orders_gz").suffix == ".json.gz"
    assert routes.by_name("customers").reader_options()["header"] == "true"
    assert [r.name for r in routes.rules] == ["orders", "orders_gz", "customers"]


def test_by_name_unknown() -> None:
    routes = parse_routes(toml(ing()))
    with pytest.raises(KeyError):
        routes.by_name("nope")


def test_routes_are_frozen() -> None:
    (route,) = parse_routes(toml(ing())).ingestion
    with pytest.raises(ValueError):
        route.table = "glue.x.y"  # type: ignore[misc]


def test_json_and_json_gz_routes_into_one_table() -> None:
    routes = parse_routes(toml(ing(), ing(name="orders_gz", suffix=".json.gz")))
    assert {i.table for i in routes.ingestion} == {"glue.sales.orders"}
    assert overlapping_pairs(routes.rules) == []


def test_same_table_same_location_modulo_trailing_slash() -> None:
    routes = parse_routes(
        toml(ing(), ing(name="orders_gz", suffix=".json.gz", location="s3://warehouse/sales/orders/"))
    )
    assert len(routes.ingestion) == 2


# --------------------------------------------------------------------------- field errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Orders"),
        ("name", "1orders"),
        ("name", "my orders"),
        ("name", "orders'"),
        ("name", "orders;drop"),
        ("name", "o" * 64),
        ("name", ""),
        ("bucket", "Landing"),
        ("bucket", "landing_bucket"),
        ("bucket", "ab"),
        ("bucket", "-landing"),
        ("bucket", "landing-"),
        ("bucket", "my bucket"),
        ("bucket", "bucket'"),
        ("bucket", "b" * 64),
        ("table", "sales.orders"),
        ("table", "glue.sales.orders.x"),
        ("table", "glue.sales.or ders"),
        ("table", "glue.sales.orders'"),
        ("table", "glue.sales.orders;drop"),
        ("table", "glue.sales.`orders`"),
        ("table", "glue..orders"),
        ("table", "glue.1sales.orders"),
        ("location", "warehouse/sales/orders"),
        ("location", "http://warehouse/sales"),
        ("location", "s3://warehouse/it's"),
        ("location", "s3://warehouse/my orders"),
        ("location", "s3://warehouse/x;drop"),
        ("location", 's3://warehouse/a"b'),
        ("location", "s3://warehouse/a?b"),
        ("location", "s3://"),
    ],
)
def test_bad_field_names_field_and_ingestion(field: str, value: str) -> None:
    name = value if field == "name" else "orders"
    message = invalid(ing(**{field: value}))
    label = f"ingestion[0] ({name})" if name else "ingestion[0]"
    assert f"  {label}.{field}: " in message


def test_second_ingestion_is_numbered() -> None:
    message = invalid(ing(), ing(name="clicks", prefix="clicks/", table="glue.web.clicks", location="bad"))
    assert "  ingestion[1] (clicks).location: " in message
    assert "ingestion[0]" not in message


def test_missing_name_is_labelled_by_index() -> None:
    message = invalid(ing(name=None))
    assert "  ingestion[0].name: Field required" in message


def test_missing_table() -> None:
    message = invalid(ing(table=None))
    assert "  ingestion[0] (orders).table: Field required" in message


def test_unknown_option_key() -> None:
    message = invalid(ing(options={"multiline": True, "compression": "gzip"}))
    assert "  ingestion[0] (orders).options.compression: Extra inputs are not permitted" in message


def test_unknown_csv_option_and_bad_delimiter() -> None:
    message = invalid(ing(format="csv", options={"delimiter": ";;", "sep": ";"}))
    assert "ingestion[0] (orders).options.delimiter: " in message
    assert "ingestion[0] (orders).options.sep: Extra inputs are not permitted" in message


def test_parquet_takes_no_options() -> None:
    message = invalid(ing(format="parquet", options={"multiline": True}))
    assert "ingestion[0] (orders).options.multiline: Extra inputs are not permitted" in message


def test_unknown_top_level_key_in_ingestion() -> None:
    message = invalid(ing(compression="gzip"))
    assert "ingestion[0] (orders).compression: Extra inputs are not permitted" in message


def test_unknown_format() -> None:
    message = invalid(ing(format="xml"))
    assert "ingestion[0] (orders): " in message
    assert "'xml'" in message
    assert "'json', 'csv', 'parquet'" in message


def test_missing_format() -> None:
    message = invalid(ing(format=None))
    assert "ingestion[0] (orders): " in message
    assert "'format'" in message


def test_several_errors_all_reported() -> None:
    message = invalid(ing(bucket="BAD", table="bad", location="bad"))
    lines = message.splitlines()[1:]
    assert len(lines) == 3
    for field in ("bucket", "table", "location"):
        assert any(line.startswith(f"  ingestion[0] (orders).{field}: ") for line in lines)


def test_no_ingestion_at_all() -> None:
    with pytest.raises(ConfigError, match=r"ingestion: Field required"):
        parse_routes("")
    with pytest.raises(ConfigError, match=r"ingestion: List should have at least 1 item"):
        parse_routes("ingestion = []")


def test_ingestion_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"ingestion\[0\]"):
        parse_routes("ingestion = [1]")


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"\n  extra: Extra inputs are not permitted"):
        parse_routes(toml(ing()) + "\n[extra]\nx = 1\n")


def test_invalid_toml() -> None:
    with pytest.raises(ConfigError, match=r"^my-routes: not valid TOML: "):
        parse_routes("[[ingestion]\nname = ", "my-routes")


# --------------------------------------------------------------------------- whole-file rules


def test_duplicate_names() -> None:
    message = invalid(ing(), ing(prefix="other/", table="glue.sales.other", location="s3://wh/other"))
    assert "duplicate ingestion names: orders" in message


def test_one_table_two_locations() -> None:
    message = invalid(ing(), ing(name="orders2", prefix="other/", location="s3://warehouse/elsewhere"))
    assert "table glue.sales.orders is given two locations" in message
    assert "s3://warehouse/sales/orders" in message
    assert "s3://warehouse/elsewhere" in message


def test_one_table_two_locations_differing_in_case() -> None:
    message = invalid(
        ing(), ing(name="orders2", prefix="other/", table="glue.sales.Orders", location="s3://wh/elsewhere")
    )
    assert "tables glue.sales.orders and glue.sales.Orders differ only in case" in message


def test_overlapping_routes_on_one_bucket() -> None:
    message = invalid(
        ing(), ing(name="orders_2024", prefix="orders/2024/", table="glue.sales.o2", location="s3://wh/o2")
    )
    assert "ingestions 'orders' and 'orders_2024' overlap on bucket 'landing-bucket'" in message


def test_same_filters_on_different_buckets_are_fine() -> None:
    routes = parse_routes(
        toml(ing(), ing(name="orders_eu", bucket="landing-eu", table="glue.sales.o_eu", location="s3://wh/o_eu"))
    )
    assert len(routes.ingestion) == 2


def test_empty_prefix_overlaps_everything_with_compatible_suffix() -> None:
    message = invalid(
        ing(prefix=""), ing(name="clicks", prefix="clicks/", table="glue.web.clicks", location="s3://wh/clicks")
    )
    assert "overlap" in message


def test_routes_model_directly() -> None:
    routes = Routes.model_validate(
        {"ingestion": [ing(), ing(name="csv_orders", suffix=".csv", format="csv", table="glue.sales.csv_orders")]}
    )
    assert [type(i) for i in routes.ingestion] == [JsonIngestion, CsvIngestion]


# --------------------------------------------------------------------------- load_routes


def test_load_routes_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "routes.toml"
    with pytest.raises(ConfigError) as info:
        load_routes(path)
    message = str(info.value)
    assert str(path) in message
    assert "ICEFEED_ROUTES_FILE" in message
    assert "No such file" in message


def test_load_routes_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ICEFEED_ROUTES_FILE"):
        load_routes(tmp_path)


def test_load_routes_invalid_toml_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text("[[ingestion]]\nname = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_routes(path)
    assert str(info.value).startswith(f"{path}: not valid TOML: ")


def test_load_routes_invalid_route_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(toml(ing(bucket="UPPER")), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_routes(path)
    assert str(info.value).startswith(f"{path}: invalid routes:")
    assert "ingestion[0] (orders).bucket" in str(info.value)


def test_load_routes_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(toml(ing()), encoding="utf-8")
    assert load_routes(path).by_name("orders").table == "glue.sales.orders"


def test_load_routes_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_bytes(toml(ing()).encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"routes\.toml"):
        load_routes(path)


# --------------------------------------------------------------------------- RouteRule


def rule(name: str, prefix: str, suffix: str, bucket: str = "b") -> RouteRule:
    return RouteRule(name, bucket, prefix, suffix)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (("", ""), ("", ""), True),
        (("in/", ".json"), ("in/", ".json"), True),
        (("in/", ".json"), ("in/2024/", ".json"), True),
        (("in/", ".json"), ("in/", ".gz"), False),
        (("in/", ".json"), ("in/", ".json.gz"), False),
        (("in/", ".gz"), ("in/", ".json.gz"), True),
        (("in/", ""), ("in/", ".json"), True),
        (("in/", ".json"), ("out/", ".json"), False),
        (("", ".json"), ("out/", ".json"), True),
        (("in", ".csv"), ("in/", "x.csv"), True),
    ],
)
def test_overlaps(a: tuple[str, str], b: tuple[str, str], overlap: bool) -> None:
    ra, rb = rule("a", *a), rule("b", *b)
    assert ra.overlaps(rb) is overlap
    assert rb.overlaps(ra) is overlap


def test_different_buckets_never_overlap() -> None:
    assert not rule("a", "", "", bucket="b1").overlaps(rule("b", "", "", bucket="b2"))


def test_overlapping_pairs() -> None:
    a = rule("a", "in/", ".json")
    b = rule("b", "in/", ".json.gz")
    c = rule("c", "in/x/", ".json")
    d = rule("d", "", ".gz")
    assert overlapping_pairs([a, b, c, d]) == [(a, c), (b, d)]
    assert overlapping_pairs([a, b]) == []
    assert overlapping_pairs([]) == []


def test_matches() -> None:
    r = rule("a", "in/", ".json")
    assert r.matches("b", "in/x.json")
    assert r.matches("b", "in/.json")
    assert not r.matches("other", "in/x.json")
    assert not r.matches("b", "in/x.json.gz")
    assert not r.matches("b", "out/x.json")


def test_match_route() -> None:
    json_rule = rule("plain", "in/", ".json")
    gz_rule = rule("gz", "in/", ".json.gz")
    other_bucket = rule("elsewhere", "in/", ".json", bucket="b2")
    rules = [json_rule, gz_rule, other_bucket]
    assert match_route(rules, "b", "in/x.json") is json_rule
    assert match_route(rules, "b", "in/x.json.gz") is gz_rule
    assert match_route(rules, "b2", "in/x.json") is other_bucket
    assert match_route(rules, "b", "in/x.csv") is None
    assert match_route(rules, "b3", "in/x.json") is None
    assert match_route([], "b", "in/x.json") is None


def test_match_route_first_wins() -> None:
    first, second = rule("first", "", ""), rule("second", "", "")
    assert match_route([first, second], "b", "k") is first
    assert match_route(iter([second, first]), "b", "k") is second


# Small alphabet: plenty of shared prefixes/suffixes.
_affix = st.text(alphabet="ab/.", max_size=4)


@PROPERTY
@given(p1=_affix, s1=_affix, p2=_affix, s2=_affix, mids=st.lists(st.text(alphabet="ab/.x", max_size=4), max_size=5))
def test_non_overlapping_rules_share_no_key(p1: str, s1: str, p2: str, s2: str, mids: list[str]) -> None:
    r1, r2 = rule("r1", p1, s1), rule("r2", p2, s2)
    assert r1.overlaps(r2) == r2.overlaps(r1)
    keys = [r.prefix + mid + r.suffix for r in (r1, r2) for mid in ["", *mids]]
    # every generated key belongs to the rule it was built from
    assert all(r1.matches("b", k) or r2.matches("b", k) for k in keys)
    if not r1.overlaps(r2):
        for key in keys:
            assert not (r1.matches("b", key) and r2.matches("b", key)), key
    else:
        # overlap means a key matching both exists: the longer prefix + the longer suffix
        witness = max(p1, p2, key=len) + max(s1, s2, key=len)
        assert r1.matches("b", witness)
        assert r2.matches("b", witness)
        assert match_route([r1, r2], "b", witness) is r1


@PROPERTY
@given(p1=_affix, s1=_affix, p2=_affix, s2=_affix)
def test_overlap_is_exactly_a_shared_key(p1: str, s1: str, p2: str, s2: str) -> None:
    """Exhaustive over short keys: overlaps() is True iff some key matches both rules."""
    from itertools import product

    r1, r2 = rule("r1", p1, s1), rule("r2", p2, s2)
    longest = max(len(p1), len(p2)) + max(len(s1), len(s2))
    shared = any(
        r1.matches("b", key) and r2.matches("b", key)
        for n in range(longest + 1)
        for key in map("".join, product("ab/.", repeat=n))
    )
    assert r1.overlaps(r2) is shared


# --------------------------------------------------------------------------- where an error is


def test_an_error_names_its_place_in_the_routes_file() -> None:
    from worker.routes import _where

    raw: dict[str, object] = {"ingestion": [{"name": "orders"}, {"bucket": "b"}]}
    assert _where(("ingestion", 0, "table"), raw) == "ingestion[0] (orders).table"
    assert _where(("ingestion", 1, "json", "options"), raw) == "ingestion[1].options"  # the format tag is dropped
    assert _where(("ingestion", 2, "csv", "prefix"), raw) == "ingestion[2].prefix"  # past the list: no name
    assert _where(("engine", 0, "name"), raw) == "engine.0.name"
    assert _where(("json", 0), raw) == "json.0"
    assert _where((), raw) == "(top level)"


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routes(text)
    return str(info.value)


def test_engine_errors_and_lookups_name_what_is_missing() -> None:
    text = toml(ing(engine="team_a")) + '[[engine]]\nname = "team_b"\nurl = "sc://b:15002"\n'
    message = refused(text)
    assert (
        "ingestion 'orders': engine 'team_a' is not defined (engines: default, team_b; add an [[engine]] block)"
        in message
    )
    two = (
        toml(ing(), ing(name="o2", prefix="other/", engine="team_b"))
        + '[[engine]]\nname = "team_b"\nurl = "sc://b:1"\n'
    )
    message = refused(two)
    assert message.endswith(
        "table glue.sales.orders is written by two engines: default and team_b "
        "(one table, one engine: its commits are serialized on one cluster)"
    )
    engines = "".join(f'[[engine]]\nname = "{n}"\nurl = "sc://a:1"\n' for n in ("x", "y", "x", "y"))
    assert "duplicate engine names: x, y" in refused(toml(ing()) + engines)
    routes = parse_routes(toml(ing(schema_hints={"price": "decimal(10,2)"})))
    with pytest.raises(KeyError, match="nope"):
        routes.engine_of("nope")
    with pytest.raises(KeyError, match="nope"):
        routes.by_name("nope")
    assert {c: type_string(t) for c, t in routes.ingestion[0].hint_types().items()} == {"price": "decimal(10,2)"}
