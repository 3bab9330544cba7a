"""The container image's dependency list stays in step with pyproject.toml, and the CLI reports its
version. The built image itself is run and checked by tests/image; hadolint checks the Dockerfile
in infra/check.sh."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from worker.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def _image_requirements() -> list[str]:
    lines = (ROOT / "requirements-image.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_image_requirements_are_the_runtime_dependencies_with_the_lean_client() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pyspark = [d for d in deps if d.startswith("pyspark[connect]==")]
    assert len(pyspark) == 1
    version = pyspark[0].split("==")[1]
    expected = [f"pyspark-client=={version}" if d.startswith("pyspark[") else d for d in deps]
    assert _image_requirements() == expected


def test_dockerfile_runs_the_worker_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["icefeed"]' in text and 'CMD ["run"]' in text
    assert "requirements-image.txt" in text and "--no-deps ." in text
    assert "ICEFEED_MIGRATIONS_DIR=/opt/icefeed/migrations" in text and "COPY migrations" in text


def test_version_flag_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"icefeed {version('icefeed')}"


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    sources = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.update(w.rstrip("/") for w in words[1:-1] if not w.startswith("--"))
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and r[0] != "#"]
    assert rules[0] == "*", "an allow-list: everything else stays out of the build context"
    assert {r[1:] for r in rules if r.startswith("!")} == sources
