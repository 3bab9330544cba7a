"""The documentation does not lie about what exists.

Every ``icefeed …`` command shown in README.md, CONTRIBUTING.md and docs/*.md (fenced code
blocks and inline code) names sub-commands and flags the real CLI parser has; every ``make X``
shown is a Makefile target; every ``ICEFEED_*`` variable named is a setting of
worker/settings.py (or a listed test-harness variable), and every setting is documented in
docs/configuration.md; every relative link points to an existing file, and to an existing
heading when it names an anchor.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from worker.__main__ import _parser
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
CONFIGURATION = ROOT / "docs" / "configuration.md"

#: ICEFEED_* variables the docs name that are not worker settings: read by the test harness only.
TEST_HARNESS_VARIABLES = {  # and the image scripts' variables (docs/image.md)
    "ICEFEED_SIM_SEEDS": "tests/sim/test_sim.py",
    "ICEFEED_SPARK4_MEASURE_DETACHED": "tests/spark4/test_engine_fence.py",
    "ICEFEED_IMAGE": "infra/image/build.sh",
    "ICEFEED_IMAGE_BUILDER": "infra/image/build.sh",
    "ICEFEED_IMAGE_CACHE": "infra/image/stand-in-base.sh",
    "ICEFEED_DEBIAN_MIRROR": "infra/image/stand-in-base.sh",
    "ICEFEED_CA_BUNDLE": "infra/image/stand-in-base.sh",
}

FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
VARIABLE = re.compile(r"\bICEFEED_[A-Z0-9_]*")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def split_code(text: str) -> tuple[list[str], str]:
    """(fenced blocks' bodies, the text with those blocks removed)."""
    blocks = [m.group(2) for m in FENCE.finditer(text)]
    return blocks, FENCE.sub("", text)


def shown_commands(text: str, program: str) -> Iterator[str]:
    """Command lines of ``program`` shown in ``text``: lines of fenced blocks (only the ``$ ``
    lines when a block shows a session with output) and inline code spans."""
    blocks, prose = split_code(text)
    for block in blocks:
        lines = block.splitlines()
        session = any(line.startswith("$ ") for line in lines)
        for line in lines:
            if session and not line.startswith("$ "):
                continue
            line = line.removeprefix("$ ").strip()
            if _is_command(line, program):
                yield line
    for span in INLINE.findall(prose):
        span = " ".join(span.split())
        if _is_command(span, program):
            yield span


def _is_command(line: str, program: str) -> bool:
    """``icefeed files …`` is a command; ``icefeed retry: PgLockTimeout: …`` is its output."""
    words = _words(line)
    return words[:1] == [program] and not (len(words) > 1 and words[1].endswith(":"))


def _words(line: str) -> list[str]:
    """Shell words of a shown command, without leading VAR=value assignments and comments."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split("#", 1)[0].split()
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_command(root: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """What in one shown ``icefeed …`` command the parser does not know (empty: all of it)."""
    problems: list[str] = []
    parser, parent = root, root
    path = ["icefeed"]
    tokens = [t for t in (w.strip("[]") for w in words[1:]) if t]
    alternative = False
    for token in tokens:
        if token == "|":  # `approve | reject`: the next word replaces the last sub-command
            parser, alternative = parent, True
            continue
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            if "…" not in flag and flag not in parser._option_string_actions:
                problems.append(f"{' '.join(path)}: no flag {flag}")
            continue
        choices = _subcommands(parser)
        if not choices:
            continue  # a positional value of a leaf command
        names = [n for n in token.split("|") if n and "…" not in n]
        unknown = [n for n in names if n not in choices]
        if unknown:
            problems.append(f"{' '.join(path)}: no sub-command {'/'.join(unknown)}")
            break
        if not names:
            break
        if alternative:
            path = path[:-1]
        parent, parser, alternative = parser, choices[names[0]], False
        path.append(names[0])
    return problems


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE)}


def settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f"ICEFEED_{name}_{sub}".upper() for sub in kind.model_fields}
        else:
            names.add(f"ICEFEED_{name}".upper())
    return names


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = split_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, re.MULTILINE):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_the_docs_exist() -> None:
    names = {_rel(p) for p in DOCS}
    for required in ("docs/configuration.md", "docs/operations.md", "docs/schema-evolution.md", "docs/throughput.md"):
        assert required in names
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200, "README is the front door"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_icefeed_commands_exist_in_the_cli(doc: Path) -> None:
    root = _parser()
    problems = [
        f"`{line}`: {problem}"
        for line in shown_commands(doc.read_text(encoding="utf-8"), "icefeed")
        for problem in check_command(root, _words(line))
    ]
    assert not problems, "\n".join(problems)


def test_the_docs_show_the_operator_commands() -> None:
    shown = {
        " ".join(_words(line)[1:2])
        for doc in DOCS
        for line in shown_commands(doc.read_text(encoding="utf-8"), "icefeed")
    }
    missing = set(_subcommands(_parser())) - shown
    assert not missing, f"sub-commands no doc shows: {sorted(missing)}"


def test_command_checker_catches_what_does_not_exist() -> None:
    root = _parser()
    assert check_command(root, _words("icefeed files --status failed [--since 1h|2d|ISO]")) == []
    assert check_command(root, _words("icefeed schema approve | reject")) == []
    assert check_command(root, _words("ICEFEED_X='a b' icefeed dlq show [--max 10]  # peek")) == []
    assert check_command(root, _words("icefeed files --nope")) == ["icefeed files: no flag --nope"]
    assert check_command(root, _words("icefeed dlq purge")) == ["icefeed dlq: no sub-command purge"]
    assert check_command(root, _words("icefeed schema approve 1 --rescue --frobnicate")) == [
        "icefeed schema approve: no flag --frobnicate"
    ]


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_make_targets_exist(doc: Path) -> None:
    targets = make_targets()
    shown = [_words(line) for line in shown_commands(doc.read_text(encoding="utf-8"), "make")]
    missing = [" ".join(w) for w in shown if len(w) > 1 and w[1] not in targets]
    assert not missing, f"no such Makefile target: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_settings_named_exist(doc: Path) -> None:
    known = settings_variables() | set(TEST_HARNESS_VARIABLES)
    named = {v for v in VARIABLE.findall(doc.read_text(encoding="utf-8")) if not v.endswith("_")}
    assert not named - known, f"not a setting in worker/settings.py: {sorted(named - known)}"


def test_test_harness_variables_are_read_where_listed() -> None:
    for name, source in TEST_HARNESS_VARIABLES.items():
        assert name in (ROOT / source).read_text(encoding="utf-8"), f"{name} is no longer read by {source}"


def test_every_setting_is_documented() -> None:
    documented = set(VARIABLE.findall(CONFIGURATION.read_text(encoding="utf-8")))
    missing = settings_variables() - documented
    assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    _, prose = split_code(doc.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, …
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not broken, "\n".join(broken)


def test_slug_is_githubs() -> None:
    assert slug("Was file X loaded? (SQL on the ledger)") == "was-file-x-loaded-sql-on-the-ledger"
    assert slug("The ledger's tables") == "the-ledgers-tables"
    assert slug("`ICEFEED_SPARK_DETACHED_LIMIT_S`") == "icefeed_spark_detached_limit_s"
    assert slug("The fence: why a released batch can never commit afterwards") == (
        "the-fence-why-a-released-batch-can-never-commit-afterwards"
    )
