"""The hand-picked mutants of the quick check. Each is a bug that once survived the unit tier, or
one in a rule the product's guarantees rest on; ``tests`` are the unit test modules that must kill
it (and only those run, so the check stays within about a minute)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]

    @property
    def module(self) -> str:
        return self.path.removesuffix(".py").replace("/", ".")


_U = "tests/unit/"

MUTANTS = (
    # -- the five that survived all unit tests once ----------------------------------------------
    Mutant(
        "batch-max-bytes-exclusive",
        "a batch may not fill max_bytes exactly ('>' turned into '>=')",
        "worker/domain/batching.py",
        "size + work.size > self.limits.max_bytes",
        "size + work.size >= self.limits.max_bytes",
        (_U + "test_batching.py",),
    ),
    Mutant(
        "strict-like-evolve",
        "the strict policy lets compatible table changes through, like evolve",
        "worker/domain/policy.py",
        "        return [c for c in changes if c.breaking or c.requires_table_change]\n",
        "        return [c for c in changes if c.breaking]\n",
        (_U + "test_policy.py",),
    ),
    Mutant(
        "data-before-transient",
        "engine errors are matched against data patterns before transient ones",
        "worker/domain/errors.py",
        "    for error_class, needles in _TRANSIENT_PATTERNS:\n"
        "        if any(n in text for n in needles):\n"
        '            return TransientError(f"{kind}: {message}", error_class=error_class)\n'
        "    for error_class, needles in _DATA_PATTERNS:\n"
        "        if any(n in text for n in needles):\n"
        '            return DataError(f"{kind}: {message}", error_class=error_class)\n',
        "    for error_class, needles in _DATA_PATTERNS:\n"
        "        if any(n in text for n in needles):\n"
        '            return DataError(f"{kind}: {message}", error_class=error_class)\n'
        "    for error_class, needles in _TRANSIENT_PATTERNS:\n"
        "        if any(n in text for n in needles):\n"
        '            return TransientError(f"{kind}: {message}", error_class=error_class)\n',
        (_U + "test_errors.py",),
    ),
    Mutant(
        "rescue-nullability",
        "the rescue policy rescues a column whose only change is its nullability",
        "worker/domain/policy.py",
        'needs_table_change(c for c in changes if c.kind != "nullability_changed")',
        "needs_table_change(changes)",
        (_U + "test_policy.py",),
    ),
    Mutant(
        "skip-every-sequencer",
        "every event that carries a sequencer is skipped as stale",
        "worker/pipeline.py",
        "                and event_seq\n"
        "                and best\n"
        "                and best[1] != reg.registration.etag\n"
        "                and sequencer_newer(best[0], event_seq)\n",
        "                and event_seq\n",
        (_U + "test_pipeline_intake.py",),
    ),
    # -- batching --------------------------------------------------------------------------------
    Mutant(
        "two-versions-one-batch",
        "two versions of one key share a batch (rows are attributed by _source_file)",
        "worker/domain/batching.py",
        "            if work.source_file in sources:\n                continue\n",
        "",
        (_U + "test_batching.py",),
    ),
    Mutant(
        "newest-per-key-oldest",
        "of two versions of a key offered together, the older is loaded first",
        "worker/domain/batching.py",
        "if best is None or upload_order(f) > upload_order(best):",
        "if best is None or upload_order(f) < upload_order(best):",
        (_U + "test_batching.py",),
    ),
    # -- events ----------------------------------------------------------------------------------
    Mutant(
        "sequencer-unpadded",
        "S3 sequencers of different lengths are compared without right-padding",
        "worker/domain/events.py",
        'return ua.ljust(width, "0") > ub.ljust(width, "0")',
        "return ua > ub",
        (_U + "test_events.py",),
    ),
    Mutant(
        "key-not-form-decoded",
        "keys are URL-decoded without turning '+' into a space",
        "worker/domain/events.py",
        'key = unquote_plus(raw_key, errors="strict")',
        'key = unquote_plus(raw_key.replace("+", "%2B"), errors="strict")',
        (_U + "test_events.py",),
    ),
    Mutant(
        "test-event-malformed",
        "the s3:TestEvent sent when notifications are configured is rejected as malformed",
        "worker/domain/events.py",
        '    if event == _TEST_EVENT or event == "TestEvent":\n        return Ignored(_TEST_EVENT)\n',
        "",
        (_U + "test_events.py",),
    ),
    # -- outcomes and the circuit ----------------------------------------------------------------
    Mutant(
        "outage-spends-receives",
        "a file waiting out an outage spends its message's receives",
        "worker/domain/outcomes.py",
        '        return Retry(delay, f"{what}: {state.error_message or state.error_class}", in_flight=True)',
        '        return Retry(delay, f"{what}: {state.error_message or state.error_class}", in_flight=False)',
        (_U + "test_outcomes.py",),
    ),
    Mutant(
        "backoff-uncapped",
        "the retry backoff ignores its maximum",
        "worker/domain/outcomes.py",
        "    return int(min(max_s, base_s * (2**exponent)))",
        "    return int(base_s * (2**exponent))",
        (_U + "test_outcomes.py",),
    ),
    Mutant(
        "circuit-half-open-many",
        "a half-open circuit lets every call through instead of one probe",
        "worker/domain/circuit.py",
        "        if self.state == HALF_OPEN and not self._probing:",
        "        if self.state == HALF_OPEN:",
        (_U + "test_engines.py",),
    ),
    # -- schema, keys, routing -------------------------------------------------------------------
    Mutant(
        "narrowing-is-widening",
        "a file type narrower than the table's is taken as a widening of the table",
        "worker/domain/schema.py",
        "    if widened is t:\n        out.append(Change(ChangeKind.TYPE_NARROWED,",
        "    if widened is t:\n        out.append(Change(ChangeKind.TYPE_WIDENED,",
        (_U + "test_schema.py",),
    ),
    Mutant(
        "reserved-name-case",
        "icefeed's own column names are compared case-sensitively (_SOURCE_FILE shadows _source_file)",
        "worker/domain/policy.py",
        "    return name.upper().lower()",
        "    return name",
        (_U + "test_reserved_and_keys.py",),
    ),
    Mutant(
        "dot-segments-safe",
        "keys with '.' or '..' segments are handed to the engine, which resolves them",
        "worker/domain/keys.py",
        "    dots = sorted({s for s in segments if s in _DOT_SEGMENTS})",
        "    dots: list[str] = []",
        (_U + "test_reserved_and_keys.py",),
    ),
    Mutant(
        "routes-suffix-overlap",
        "two routes on one bucket overlap by prefix alone (suffixes ignored)",
        "worker/domain/routing.py",
        "        return prefixes and suffixes",
        "        return prefixes",
        (_U + "test_routes.py",),
    ),
    Mutant(
        "fairness-contended-share",
        "a table holding its share is admitted while another table waits (a flood starves the rest)",
        "worker/domain/fairness.py",
        "    return mine >= max(floor, lane_share(window, held, lane))",
        "    return False",
        (_U + "test_fairness.py",),
    ),
    # -- settings and dialects -------------------------------------------------------------------
    Mutant(
        "ledger-schema-unchecked",
        "the ledger schema name reaches SQL without validation",
        "worker/settings.py",
        "        if not IDENTIFIER.match(value):\n"
        '            raise ValueError("must match [A-Za-z_][A-Za-z0-9_]* (at most 63 characters)")\n',
        "",
        (_U + "test_settings.py",),
    ),
    Mutant(
        "spark-url-session",
        "a Spark Connect URL that names a session is accepted",
        "worker/settings.py",
        '        if "session_id" in spark_url_params(value.get_secret_value()):',
        "        if False:",
        (_U + "test_settings.py", _U + "test_spark_sessions.py"),
    ),
    Mutant(
        "parquet-nested-change",
        "a Parquet table is asked for a change ALTER TABLE ADD COLUMNS cannot make",
        "worker/adapters/dialects.py",
        "        unsupported = [c for c in changes if c.kind is not ChangeKind.COLUMN_ADDED]",
        "        unsupported: list[Change] = []",
        (_U + "test_dialects.py",),
    ),
)
