"""Shared loaders for the infra tests: Terraform through python-hcl2, manifests through PyYAML."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
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


# --- maintenance.tf evaluated by terraform, without the AWS provider ----------------------------

# What maintenance.tf takes from main.tf (data sources there): stand-ins with fixed values.
STUB_LOCALS = {"partition": "aws", "account_id": "111122223333", "region": "eu-west-1"}
# Required inputs of the module that the maintenance statements do not read.
BASE_INPUTS: dict[str, Any] = {
    "name": "icefeed-test",
    "routes": {"acme-landing-zone": [{"name": "orders", "prefix": "incoming/orders/"}]},
    "oidc_provider_arn": "arn:aws:iam::111122223333:oidc-provider/oidc.example.com/id/X",
    "oidc_provider_url": "oidc.example.com/id/X",
    "namespace": "icefeed",
}
_OTHER_OBJECTS = re.compile(r"\b(data|module)\.|\baws_[a-z0-9_]+\.[a-z0-9_]+\b")


def _single_interpolation(text: str) -> str | None:
    """EXPR when ``text`` is exactly one ``${EXPR}`` (python-hcl2's form of an expression)."""
    if not (text.startswith("${") and text.endswith("}")):
        return None
    depth = 0
    for i, ch in enumerate(text[1:], 1):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return text[2:-1] if i == len(text) - 1 else None
    return None


def to_hcl(value: Any) -> str:
    """An expression read by python-hcl2, written back as HCL source."""
    if isinstance(value, str):
        expr = _single_interpolation(value)
        return f"({expr})" if expr is not None else json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_hcl(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {to_hcl(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as HCL")


class MaintenanceEval:
    """variables.tf and maintenance.tf in a scratch directory, planned by the real terraform binary
    (no provider needed: nothing there is a resource), with the worker-policy statements and the
    outputs built from maintenance.tf's locals copied in as outputs. So the variables'
    validations, the locals and those statements are evaluated exactly as Terraform would."""

    def __init__(self, terraform: str, workdir: Path, module: Module) -> None:
        self.terraform, self.workdir, self._runs = terraform, workdir, 0
        shutil.copy(TF / "variables.tf", workdir)
        shutil.copy(TF / "maintenance.tf", workdir)
        own: set[str] = set()
        for item in load_hcl(TF / "maintenance.tf").get("locals", []):
            own.update(item)
        known = own | set(STUB_LOCALS)
        lines = ["locals {", *(f"  {k} = {json.dumps(v)}" for k, v in STUB_LOCALS.items()), "}"]
        self.statement_outputs: list[str] = []
        for i, dyn in enumerate(module.data("aws_iam_policy_document")["worker"].get("dynamic", [])):
            block = dyn.get("statement")
            if not block or not self._reads_only(block, known) or not self._reads_any(block, own):
                continue
            (content,) = block["content"]
            assert "dynamic" not in content, "a dynamic condition is not rendered here"
            body = {
                "sid": content["sid"],
                "effect": content.get("effect", "Allow"),
                "actions": content["actions"],
                "resources": content["resources"],
                "conditions": [
                    {"test": c["test"], "variable": c["variable"], "values": c["values"]}
                    for c in content.get("condition", [])
                ],
            }
            rendered = re.sub(r"\bstatement\.(key|value)\b", r"statement_\1", to_hcl(body))
            name = f"statement_{i}"
            self.statement_outputs.append(name)
            lines.append(
                f'output "{name}" {{ value = [for statement_key, statement_value in {to_hcl(block["for_each"])} '
                f": {rendered}] }}"
            )
        self.module_outputs = [n for n, o in module.outputs.items() if self._reads_only(o["value"], known)]
        lines.extend(f'output "{n}" {{ value = {to_hcl(module.outputs[n]["value"])} }}' for n in self.module_outputs)
        (workdir / "stub.tf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._run("init", "-backend=false")

    @staticmethod
    def _reads_only(expr: Any, known: set[str]) -> bool:
        text = json.dumps(expr)
        return not _OTHER_OBJECTS.search(text) and set(re.findall(r"\blocal\.(\w+)", text)) <= known

    @staticmethod
    def _reads_any(expr: Any, names: set[str]) -> bool:
        return bool(set(re.findall(r"\blocal\.(\w+)", json.dumps(expr))) & names)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        done = subprocess.run(
            [self.terraform, *args, "-no-color"], cwd=self.workdir, env=env, capture_output=True, text=True, timeout=120
        )
        if check and done.returncode != 0:
            raise AssertionError(f"terraform {args[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def plan(self, **inputs: Any) -> subprocess.CompletedProcess[str]:
        self._runs += 1
        var_file = self.workdir / f"inputs{self._runs}.tfvars.json"
        var_file.write_text(json.dumps({**BASE_INPUTS, **inputs}), encoding="utf-8")
        return self._run("plan", "-lock=false", f"-var-file={var_file.name}", f"-out=plan{self._runs}", check=False)

    def evaluate(self, **inputs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(the rendered maintenance statements, in policy order; the copied module outputs)."""
        planned = self.plan(**inputs)
        assert planned.returncode == 0, f"plan failed:\n{planned.stdout}\n{planned.stderr}"
        shown = json.loads(self._run("show", "-json", f"plan{self._runs}").stdout)
        outputs = {k: v.get("value") for k, v in shown["planned_values"]["outputs"].items()}
        statements = [s for name in self.statement_outputs for s in outputs[name]]
        return statements, {n: outputs[n] for n in self.module_outputs}

    def error(self, **inputs: Any) -> str:
        """The error output of a plan that must fail."""
        planned = self.plan(**inputs)
        assert planned.returncode != 0, f"plan succeeded for {inputs}"
        return re.sub(r"\s+", " ", planned.stderr)


@pytest.fixture(scope="session")
def maintenance_eval(module: Module, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaintenanceEval]:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on PATH: the maintenance statements are only checked structurally")
    yield MaintenanceEval(terraform, tmp_path_factory.mktemp("maintenance"), module)


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
