"""Summarise a checkov JSON report: one line of counts, then every failure and every skip.

Usage: python checkov_summary.py REPORT.json LABEL
Exit status 1 when the report has a failed check or a parsing error (checkov silently drops a
file it cannot parse, so a parse error must fail the gate too), 2 when the report is unusable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str, label: str) -> int:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{label}: no usable checkov report ({exc})")
        return 2
    reports = data if isinstance(data, list) else [data]
    passed = failed = skipped = parse_errors = resources = 0
    failures: list[str] = []
    skips: list[str] = []
    for report in reports:
        summary = report.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0)
        skipped += summary.get("skipped", 0)
        parse_errors += summary.get("parsing_errors", 0)
        resources += summary.get("resource_count", 0)
        results = report.get("results", {})
        for check in results.get("failed_checks", []):
            lines = check.get("file_line_range") or ["?", "?"]
            failures.append(
                f"  FAILED {check['check_id']} {check.get('resource')} "
                f"{check.get('file_path')}:{lines[0]}-{lines[1]}  {check.get('check_name')}"
            )
        for check in results.get("skipped_checks", []):
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            skips.append(f"  skipped {check['check_id']} {check.get('resource')}: {reason}")
    print(
        f"{label}: {passed} passed, {failed} failed, {skipped} skipped, "
        f"{parse_errors} parsing errors ({resources} resources)"
    )
    for line in failures + skips:
        print(line)
    if not reports or resources == 0:
        print(f"{label}: checkov scanned no resource")
        return 2
    return 1 if failed or parse_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
