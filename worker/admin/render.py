"""Human text for the operator commands' results (``--json`` prints the dicts themselves)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.admin.common import since_text

SHOWN_STATUSES = ("LOADED", "PENDING", "CLAIMED", "FAILED", "QUARANTINED")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> list[str]:
    """Plain aligned columns (no borders): operators paste these into tickets."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(parts).rstrip())
    return out


def _now(result: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(result["now"]) if result.get("now") else datetime.now(UTC)


def _attention(lines: list[str], result: dict[str, Any]) -> None:
    if result.get("attention"):
        lines.append("")
        lines.append("needs attention:")
        lines += [f"  - {a}" for a in result["attention"]]


def _short(text: Any, width: int = 80) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= width else value[: width - 1] + "…"


# -- status ---------------------------------------------------------------------------------


def status(r: dict[str, Any]) -> str:
    now = _now(r)
    scope = f"ingestion {r['ingestion']}" if r["ingestion"] else "all ingestions"
    lines = [f"icefeed status: {scope}, ledger schema {r['ledger_schema']}, {now:%Y-%m-%d %H:%M:%S} UTC", ""]
    entries = [*r["ingestions"]]
    if len(entries) != 1:
        entries.append({"ingestion": "total", **r["totals"]})
    if not r["ingestions"]:
        lines.append("no files in the ledger yet")
    else:
        rows = []
        for e in entries:
            counts = e["by_status"]
            other = sum(n for s, n in counts.items() if s not in SHOWN_STATUSES)
            rows.append(
                [
                    e["ingestion"],
                    *(counts.get(s, 0) for s in SHOWN_STATUSES),
                    other,
                    e["rows_today"],
                    since_text(e["last_loaded_at"], now),
                ]
            )
        headers = ["ingestion", "loaded", "pending", "claimed", "failed", "quarantined", "other"]
        lines += table([*headers, "rows today", "last loaded"], rows, right=range(1, 8))
    lines.append("")
    oldest = r["oldest_open"]
    if oldest:
        waited = since_text(oldest["first_seen_at"], now).split(" (", 1)[1].rstrip(")")
        lines.append(f"oldest open file:  {oldest['uri']}  {oldest['status']} for {waited}")
    else:
        lines.append("oldest open file:  none (nothing waiting)")
    lines.append(
        f"stuck PENDING:     {r['stuck_pending']} (no message for {int(r['stuck_after_s'])} s, or dead-lettered)"
    )
    b = r["batches"]
    lines.append(
        f"batches:           {b['writing']} writing ({b['lease_expired']} past their lease), "
        f"{b['aborted_last_day']} aborted in the last day, last commit {since_text(b['last_commit_at'], now)}"
    )
    lines.append(f"schema proposals:  {r['open_proposals']} open")
    lines.append(f"rejected messages: {r['rejected_messages_last_day']} in the last day")
    if not r["queues"]:
        lines.append("queue:             not configured (ICEFEED_SQS_QUEUE_URLS)")
    for q in r["queues"]:
        if "error" in q:
            lines.append(f"queue {q['name']}:  {q['error']}")
            continue
        lines.append(f"queue {q['name']}:  {q['visible']} waiting, {q['in_flight']} in flight, {q['delayed']} delayed")
        if q["dlq"] is None:
            lines.append("  dead-letter queue: none")
        else:
            d = q["dlq"]
            lines.append(
                f"  dead-letter queue {d['name']}: {d['messages']} message(s) (after {d['max_receive_count']} receives)"
            )
    if r.get("engines"):
        lines += ["", "engines (as the workers' circuit breakers see them, last 5 minutes):"]
        rows = [
            [
                e["engine"],
                e["state"],
                e["workers"],
                since_text(e["failing_since"], now) if e["failing_since"] else "-",
                _short(e["last_error"], 60) if e["last_error"] else "-",
            ]
            for e in r["engines"]
        ]
        lines += [
            "  " + line
            for line in table(("engine", "state", "workers", "failing since", "last error"), rows, right=(2,))
        ]
    if r.get("tables"):
        lines += ["", "tables (as their last maintenance saw them):"]
        rows = []
        for t in r["tables"]:
            when = "running now" if t["running"] else f"{t['maintenance'] or '-'} {since_text(t['maintained_at'], now)}"
            rows.append([*health_row(t["table"], t["stats"]), when])
        lines += ["  " + line for line in table([*HEALTH_HEADERS, "last maintenance"], rows, right=(1, 2, 3, 4, 5))]
    _attention(lines, r)
    return "\n".join(lines)


# -- files / file ---------------------------------------------------------------------------


def files(r: dict[str, Any]) -> str:
    if not r["files"]:
        return "no files match"
    rows = [
        [
            f["id"],
            f["status"],
            f["ingestion"],
            f["uri"],
            f["rows_loaded"] if f["rows_loaded"] is not None else "",
            f["rows_rejected"] or "",
            f["attempts"],
            (f["updated_at"] or "")[:19].replace("T", " "),
            _short(f"{f['error_class']}: {f['error_message']}" if f["error_class"] else "", 70),
        ]
        for f in r["files"]
    ]
    lines = table(
        ["id", "status", "ingestion", "file", "rows", "rejected", "tries", "updated (UTC)", "error"],
        rows,
        right=(0, 4, 5, 6),
    )
    shown = len(r["files"])
    lines.append("")
    if r["total"] > shown:
        lines.append(f"showing the newest {shown} of {r['total']} file(s) (--limit to see more)")
    else:
        lines.append(f"{shown} file(s)")
    return "\n".join(lines)


def file(r: dict[str, Any]) -> str:
    lines = [r["uri"]]
    route = r["route"]
    lines.append(
        f"  route:  {route['ingestion']} ({route['format']}) → {route['table']}" if route else "  route:  none"
    )
    obj = r["object"]
    if obj.get("error"):
        lines.append(f"  in S3:  unknown ({obj['error']})")
    elif obj["exists"]:
        lines.append(f"  in S3:  etag {obj['etag']}, {obj['size']} bytes")
    else:
        lines.append("  in S3:  no such object (deleted)")
    if not r["versions"]:
        lines.append("  ledger: no row for this object")
    for n, v in enumerate(r["versions"], start=1):
        current = ", current" if v["current"] else ""
        lines.append("")
        lines.append(f"  version {n}: etag {v['etag']}{current}  (ledger id {v['id']}, ingestion {v['ingestion']})")
        rows = f", {v['rows_loaded']} rows" if v["rows_loaded"] is not None else ""
        waiting = " (registered by icefeed backfill; its notification has not arrived yet)"
        lines.append(
            f"    status {v['status']}{rows}; attempts {v['attempts']}; events seen {v['events_seen']}"
            f"{waiting if v['events_seen'] == 0 else ''}; {v['size_bytes']} bytes"
        )
        lines.append(
            f"    first seen {_t(v['first_seen_at'])}, last event {_t(v['last_event_at'])}, "
            f"claimed {_t(v['claimed_at'])}, finished {_t(v['finished_at'])}"
        )
        if v["error_class"] or v["error_message"]:
            lines.append(f"    error: {v['error_class']}: {_short(v['error_message'], 200)}")
        if v.get("rows_rejected"):
            lines.append(f"    {v['rows_rejected']} bad record(s) left out, kept in {v['bad_records']}")
            samples = v.get("bad_record_samples") or []
            if isinstance(samples, str):
                lines.append(f"      ({samples})")
            for b in samples if isinstance(samples, list) else []:
                lines.append(f"      line {b['line']} (byte {b['offset']}): {_short(b['error'], 100)}")
                lines.append(f"        {_short(b['text'], 160)}")
        if v["batch_id"]:
            batch = f"    batch {v['batch_id']}: {v['batch_status']} on {v['batch_table']}, {v['batch_files']} file(s)"
            if v["batch_rows"] is not None:
                batch += f", {v['batch_rows']} rows"
            batch += f", {_t(v['batch_created_at'])} → {_t(v['batch_finished_at'])}"
            if v["batch_recovered_by"]:
                batch += f", recovered by {v['batch_recovered_by']}"
            lines.append(batch)
            if v["batch_error_class"]:
                lines.append(f"      batch error: {v['batch_error_class']}: {_short(v['batch_error_message'], 160)}")
        if v["proposal_id"]:
            resolution = f" ({v['proposal_resolution']})" if v["proposal_resolution"] else ""
            lines.append(f"    schema proposal #{v['proposal_id']}: {v['proposal_status']}{resolution}")
        if v["replaced_by"]:
            lines.append(f"    rows replaced by ledger id {v['replaced_by']}")
    _attention(lines, r)
    return "\n".join(lines)


def _t(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "—"


# -- retry / backfill -----------------------------------------------------------------------


def retry(r: dict[str, Any]) -> str:
    lines = []
    if r["requeued"]:
        lines.append(f"re-queued {len(r['requeued'])} file(s) to {r['queue'].rsplit('/', 1)[-1]} (each loads once):")
        for f in r["requeued"]:
            was = f"{f['was']}: {f['was_error_class']}" if f["was_error_class"] else f["was"]
            lines.append(f"  {f['uri']}  (etag {f['etag']}, was {was})")
    else:
        lines.append("nothing re-queued" if r["target"] != "failed" else "nothing to retry: no FAILED or stuck file")
    if r["refused"] and r["requeued"]:
        lines.append("other versions, left alone:")
        lines += [f"  {f['uri']} (etag {f['etag']}): {f['reason']}" for f in r["refused"]]
    _attention(lines, r)
    return "\n".join(lines)


def backfill(r: dict[str, Any]) -> str:
    verb = "would send" if r["dry_run"] else "sent"
    lines = [
        f"backfill {r['uri']}{' (dry run)' if r['dry_run'] else ''}: listed {r['listed']} object(s), "
        f"{r['routed']} routed, {r['unrouted']} unrouted"
        + (f", {r['before_since']} before --since" if r["since"] else "")
    ]
    known = r["already_known"]
    detail = ", ".join(f"{s} {n}" for s, n in known.items())
    lines.append(f"  already in the ledger: {sum(known.values())}" + (f" ({detail})" if detail else ""))
    lines.append(f"  {verb} {r['sent']} notification(s)" + (":" if r["sent_keys"] else ""))
    lines += [f"    {k}" for k in r["sent_keys"]]
    if r["sent_keys_truncated"]:
        lines.append(f"    … and {r['sent'] - len(r['sent_keys'])} more")
    _attention(lines, r)
    return "\n".join(lines)


# -- dlq ------------------------------------------------------------------------------------


def dlq_show(r: dict[str, Any]) -> str:
    lines: list[str] = []
    for q in r["dlqs"]:
        source = q["source"].rsplit("/", 1)[-1]
        if not q["messages"]:
            lines.append(f"dead-letter queue {q['name']} (of {source}): empty")
            continue
        lines.append(
            f"dead-letter queue {q['name']} (of {source}): about {q['approximate_messages']} "
            f"message(s), {len(q['messages'])} shown"
        )
        for m in q["messages"]:
            sent = _t(m["sent_at"])
            lines.append(f"  message {m['message_id']}  sent {sent}  received {m['receive_count']} time(s)")
            for f in m["files"]:
                lines.append(f"    {f['uri']}  {f['state']}")
            lines += [f"    {n}" for n in m["notes"]]
            what = "sends it back to the queue" if m["action"] == "send" else "deletes it (nothing left to do)"
            lines.append(f"    → redrive {what}")
    _attention(lines, r)
    return "\n".join(lines)


def dlq_redrive(r: dict[str, Any]) -> str:
    lines: list[str] = []
    for q in r["dlqs"]:
        total = len(q["messages"])
        if not total:
            lines.append(f"redrive {q['name']} → {q['source_name']}: the dead-letter queue is empty")
            continue
        lines.append(
            f"redrive {q['name']} → {q['source_name']}: {total} message(s): {q['sent']} sent back, "
            f"{q['dropped']} deleted (their files are final)"
        )
        for m in q["messages"]:
            label = "sent back" if m["action"] == "send" else "deleted  "
            what = "; ".join(f"{f['uri']} {f['state']}" for f in m["files"]) or "; ".join(m["notes"])
            lines.append(f"  {label}  {m['message_id']}  {_short(what, 160)}")
    _attention(lines, r)
    return "\n".join(lines)


# -- preview --------------------------------------------------------------------------------


def preview(r: dict[str, Any]) -> str:
    lines = [f"preview {r['uri']}: ingestion {r['ingestion']} ({r['format']}, policy {r['policy']}) → {r['table']}"]
    obj = r["object"]
    if not obj["exists"]:
        lines.append("  no such object in S3")
        _attention(lines, r)
        return "\n".join(lines)
    lines.append(f"  object: etag {obj['etag']}, {obj['size']} bytes")
    if r["ledger"]:
        states = ", ".join(f"etag {v['etag']} {v['status']}" for v in r["ledger"])
        lines.append(f"  ledger: {states}")
    else:
        lines.append("  ledger: never seen")
    if r.get("hints"):
        lines.append("  hints:  " + ", ".join(f"{c} {t}" for c, t in r["hints"].items()))
    if r["file_schema"] is not None:
        lines.append("")
        lines.append("file schema:")
        lines += [f"  {c['name']} {c['type']}" for c in r["file_schema"]]
        lines.append("")
        lines.append(f"sample ({len(r['sample'])} row(s)):")
        lines += [f"  {orjson.dumps(s).decode()}" for s in r["sample"]]
        lines.append("")
        if r["table_schema"] is None:
            lines.append(f"table {r['table']}: does not exist yet")
        else:
            lines.append(f"table {r['table']}: " + ", ".join(f"{c['name']} {c['type']}" for c in r["table_schema"]))
            lines.append("diff (file vs table):")
            lines += [f"  {c['text']}" for c in r["diff"]] or ["  none: same columns and types"]
    bad = r.get("bad_records")
    if bad and bad["rows_rejected"]:
        lines.append("")
        lines.append(f"bad records: {bad['rows_rejected']} would be set aside (bad_records = quarantine)")
        for b in bad["samples"]:
            lines.append(f"  line {b['line']} (byte {b['offset']}): {_short(b['error'], 100)}")
    lines.append("")
    lines.append(f"decision: {r['decision']['text']}")
    lines.append("nothing was written (no ledger row, no table change)")
    _attention(lines, r)
    return "\n".join(lines)


# -- maintain -------------------------------------------------------------------------------


def _size(n: Any) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns


def health_row(name: str, stats: dict[str, Any] | None) -> list[Any]:
    """snapshots, data files, small files, average file size, metadata.json size."""
    s = stats or {}
    files = s.get("data_files")
    average = _size(s["data_bytes"] / files) if files else "-"
    return [
        name,
        s.get("snapshots", "-"),
        files if files is not None else "-",
        s.get("small_files", "-"),
        average,
        _size(s.get("metadata_bytes")),
    ]


HEALTH_HEADERS = ("", "snapshots", "data files", "small files", "avg file", "metadata.json")


def _step_text(s: dict[str, Any]) -> str:
    skip = {"step", "outcome", "reason", "error"}
    extras = ", ".join(f"{k} {v}" for k, v in s.items() if k not in skip)
    why = s.get("reason") or s.get("error") or ""
    return f"  {s['step']:<10} {s['outcome']:<8} {extras}" + (f" — {_short(why, 100)}" if why else "")


def maintain(r: dict[str, Any]) -> str:
    lines = [f"icefeed maintain{' --dry-run' if r['dry_run'] else ''}: {len(r['tables'])} table(s)"]
    for t in r["tables"]:
        lines.append("")
        head = f"{t['table']}: {t['outcome']}"
        if t["reason"]:
            head += f" ({_short(t['reason'], 120)})"
        lines.append(head)
        rows = [health_row("before" if t.get("after") else "now", t.get("stats"))]
        if t.get("after"):
            rows.append(health_row("after", t["after"]))
        if t.get("stats"):
            lines += ["  " + line for line in table(HEALTH_HEADERS, rows, right=(1, 2, 3, 4, 5))]
        plan = t.get("plan")
        if r["dry_run"] and plan:
            groups = plan["compact_groups"]
            lines.append(
                f"  would expire {plan['expire_snapshots']} snapshot(s), compact {sum(g['files'] for g in groups)} "
                f"small file(s) in {len(groups)} group(s), set {len(plan['set_properties'])} table "
                + ("property" if len(plan["set_properties"]) == 1 else "properties")
            )
        lines += [_step_text(s) for s in t.get("steps", [])]
    if r.get("disabled"):
        lines += ["", f"maintenance off for: {', '.join(r['disabled'])}"]
    _attention(lines, r)
    return "\n".join(lines)


# -- cost -----------------------------------------------------------------------------------

COST_COMPONENTS = ("SQS", "S3 reads", "S3 writes", "catalog", "engine", "PostgreSQL", "workers")
COST_LABELS = {"S3 reads": "S3 reads (GET/HEAD)", "S3 writes": "S3 writes (PUT/LIST)"}
PER_FILE_ROWS = (
    ("SQS", "SQS requests"),
    ("S3 reads", "S3 GET/HEAD"),
    ("S3 writes", "S3 PUT/LIST"),
    ("catalog", "catalog calls"),
)


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if abs(x) < 1e-3:
        return "0"
    if x == int(x) and abs(x) >= 1:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _usd(x: float) -> str:
    return f"{x:,.2f}" if x >= 0.01 or x == 0 else f"{x:.4f}"


def cost(r: dict[str, Any]) -> str:
    scenarios = r["scenarios"]
    names = [s["name"] for s in scenarios]
    lines = [
        f"icefeed cost: {_num(r['files_per_month'] / 30)} files a day, {_num(r['files_per_month'])} a month (30 days);"
        " prices ICEFEED_COST_* (defaults: list prices, us-east-1, 2026-11; see docs/cost.md)",
        "",
    ]
    rows = [[i["name"].replace("_", " "), _num(i["value"]), i["source"]] for i in r["inputs"]]
    lines += table(["input", "value", "source"], rows, right=(1,))
    b = r["batching"]
    bound = "" if b["bound"] in ("measured", "input") else f"{b['bound']} bound: "
    lines += ["", f"files per commit: {bound}{b['formula']}", ""]
    money = [[COST_LABELS.get(c, c), *(_usd(s["components_usd"][c]) for s in scenarios)] for c in COST_COMPONENTS]
    money.append(["total", *(_usd(s["total_usd"]) for s in scenarios)])
    lines += table(["monthly cost, USD", *names], money, right=range(1, len(names) + 1))
    lines.append("")
    per_file = [[label, *(_num(s["requests_per_file"][c]) for s in scenarios)] for c, label in PER_FILE_ROWS]
    per_file.append(["commits per 1000 files", *(_num(s["commits_per_1000_files"]) for s in scenarios)])
    lines += table(["per file", *names], per_file, right=range(1, len(names) + 1))
    first = scenarios[0]
    lines += ["", f"{first['name']}, line by line:"]
    detail = [
        [x["component"], x["item"], f"{_num(x['quantity'])} {x['unit']}", _usd(x["cost_usd"]), x["formula"]]
        for x in first["lines"]
    ]
    lines += ["  " + line for line in table(["", "", "a month", "USD", "how"], detail, right=(2, 3))]
    notes = list(r["notes"]) + [f"{s['name']}: {n}" for s in scenarios for n in s["notes"]]
    measured = r.get("measured") or {}
    if measured.get("ledger_bytes_per_file"):
        notes.append(
            f"ledger: the files table holds {_size(measured['ledger_files_bytes'])}, about "
            f"{_num(measured['ledger_bytes_per_file'])} bytes per file row (indexes included)"
        )
    if measured.get("lease_owners"):
        notes.append(f"ledger: {measured['lease_owners']} worker id(s) committed in the window (restarts count anew)")
    if notes:
        lines += ["", "notes:"]
        lines += [f"  - {n}" for n in notes]
    _attention(lines, r)
    return "\n".join(lines)
