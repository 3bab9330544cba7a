"""The container image's dependency list stays in step with pyproject.toml (the image cannot be
built here: no Docker engine; hadolint checks the Dockerfile in infra/check.sh)."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
