"""Shared loaders for the infra tests: Terraform through python-hcl2, manifests through PyYAML."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "infra" / "terraform"
EXAMPLE = TF / "examples" / "complete"
K8S = REPO / "infra" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

_HCL = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def load_hcl(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return hcl2.load(fh, serialization_options=_HCL)


class Module:
    """The top-level blocks of every .tf file of one directory, merged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = sorted(directory.glob("*.tf"))
        self.blocks: dict[str, list[Any]] = {}
        for path in self.files:
            for kind, items in load_hcl(path).items():
                self.blocks.setdefault(kind, []).extend(items)

    def _labelled(self, kind: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for item in self.blocks.get(kind, []):
            for type_name, by_name in item.items():
                for name, body in by_name.items():
                    out[f"{type_name}.{name}"] = body
        return out

    def resources(self, type_name: str | None = None) -> dict[str, dict[str, Any]]:
        res = self._labelled("resource")
        if type_name is None:
            return res
        return {k.split(".", 1)[1]: v for k, v in res.items() if k.split(".", 1)[0] == type_name}

    def data(self, type_name: str) -> dict[str, dict[str, Any]]:
        return {k.split(".", 1)[1]: v for k, v in self._labelled("data").items() if k.split(".", 1)[0] == type_name}

    def _named(self, kind: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for item in self.blocks.get(kind, []):
            out.update(item)
        return out

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return self._named("variable")

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self._named("output")

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return self._named("module")

    @property
    def locals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in self.blocks.get("locals", []):
            out.update(item)
        return out


def squash(expr: Any) -> str:
    """An HCL expression as one line with single spaces, for substring assertions."""
    return re.sub(r"\s+", " ", str(expr)).strip()


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    """Static and dynamic `statement` blocks of an aws_iam_policy_document."""
    found = list(policy_document.get("statement", []))
    for dyn in policy_document.get("dynamic", []):
        if "statement" in dyn:
            found.extend(dyn["statement"].get("content", []))
    return found


def conditions(statement: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(statement.get("condition", []))
    for dyn in statement.get("dynamic", []):
        if "condition" in dyn:
            found.extend(dyn["condition"].get("content", []))
    return found


@pytest.fixture(scope="session")
def module() -> Module:
    return Module(TF)


@pytest.fixture(scope="session")
def example() -> Module:
    return Module(EXAMPLE)


def load_manifests() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        with path.open(encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if doc:
                    docs.append((path, doc))
    return docs


@pytest.fixture(scope="session")
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    return load_manifests()


@pytest.fixture(scope="session")
def by_kind(manifests: list[tuple[Path, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _, doc in manifests:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def one(by_kind: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    docs = by_kind.get(kind, [])
    assert len(docs) == 1, f"expected exactly one {kind}, found {len(docs)}"
    return docs[0]


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
