"""The Kubernetes manifests in infra/k8s: worker safety, wiring between objects, KEDA, CRD schemas."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import K8S, REPO, load_manifests, load_schema, one

MANIFESTS = load_manifests()


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(deployment: dict[str, Any], by_kind: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Effective environment: ConfigMaps from envFrom, then explicit env (which wins)."""
    container = _container(deployment)
    configmaps = {cm["metadata"]["name"]: cm for cm in by_kind.get("ConfigMap", [])}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in configmaps, f"envFrom references a missing ConfigMap {ref}"
        env.update(configmaps[ref]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- files ---------------------------------------------------------------------------------------


def test_every_manifest_parses_and_is_namespace_agnostic() -> None:
    kinds = sorted(doc["kind"] for _, doc in MANIFESTS)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "TriggerAuthentication",
            "ScaledObject",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    for path, doc in MANIFESTS:
        assert "namespace" not in doc["metadata"], f"{path.name}: namespace is chosen at apply time"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p, _ in MANIFESTS}
    assert set(kustomization["resources"]) == files
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["icefeed.json=dashboard.json"]


def test_every_checkov_skip_has_a_reason() -> None:
    for path, doc in MANIFESTS:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                assert re.fullmatch(r"CKV2?_K8S_\d+=.{15,}", value), f"{path.name} {key}: {value}"


# --- worker pod ----------------------------------------------------------------------------------


def test_termination_grace_exceeds_the_drain_grace(by_kind) -> None:
    deployment = one(by_kind, "Deployment")
    grace = float(_env(deployment, by_kind)["ICEFEED_SHUTDOWN_GRACE_S"])
    termination = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert termination > grace, "SIGKILL would land inside the drain"
    assert termination - grace >= 15, "leave time to release leases/visibility and close clients"


def test_worker_runs_icefeed_run(by_kind) -> None:
    container = _container(one(by_kind, "Deployment"))
    assert container.get("command", []) + container.get("args", []) == ["icefeed", "run"]
    assert "replicas" not in one(by_kind, "Deployment")["spec"], "KEDA owns the replica count"


def test_worker_is_non_root_read_only_and_unprivileged(by_kind) -> None:
    pod = one(by_kind, "Deployment")["spec"]["template"]["spec"]
    container = _container(one(by_kind, "Deployment"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_tmp_is_a_writable_emptydir(by_kind) -> None:
    deployment = one(by_kind, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in _container(deployment)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert not mounts["/tmp"].get("readOnly", False)


def test_requests_and_limits(by_kind) -> None:
    resources = _container(one(by_kind, "Deployment"))["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), section


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
# The worker process itself, warm (pyspark, pyarrow, a Spark Connect session): ~200 MiB measured
# (tests/integration/test_memory.py), with room for the copies it sends to the engine.
_PROCESS_BYTES = 320 * 2**20


def _quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS.get(unit or "", 1)


def test_memory_budget_fits_the_container_limit(by_kind) -> None:
    """The budget (worker/memory.py) bounds worker-read data next to the process; one file over
    the budget runs alone, its parse costing at most 5 bytes per byte + 110 per JSON value."""
    deployment = one(by_kind, "Deployment")
    env = _env(deployment, by_kind)
    limit = _quantity(_container(deployment)["resources"]["limits"]["memory"])
    budget = int(env["ICEFEED_MEMORY_BUDGET_BYTES"])
    one_file = 5 * int(env["ICEFEED_SPARK_WORKER_DECODE_MAX_BYTES"]) + 110 * int(
        env["ICEFEED_SPARK_WORKER_DECODE_MAX_VALUES"]
    )
    assert _PROCESS_BYTES + max(budget, one_file) <= limit, (budget, one_file, limit)


def test_probes_on_healthz_and_readyz_via_the_http_port(by_kind) -> None:
    container = _container(one(by_kind, "Deployment"))
    assert {"name": "http", "containerPort": 9108, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_environment(by_kind) -> None:
    deployment = one(by_kind, "Deployment")
    env = _env(deployment, by_kind)
    assert re.fullmatch(
        r"https://sqs\.[a-z0-9-]+\.amazonaws\.com/\d{12}/[\w-]+(,https://\S+)*", env["ICEFEED_SQS_QUEUE_URLS"]
    )
    assert re.fullmatch(r"[a-z]{2}-[a-z]+-\d", env["ICEFEED_AWS_REGION"])
    assert env["ICEFEED_LOG_FORMAT"] == "json"
    for name, key in (("ICEFEED_SPARK_URL", "spark-url"), ("ICEFEED_PG_DSN", "pg-dsn")):
        assert env[name] == {"secretKeyRef": {"name": "icefeed-secrets", "key": key}}, (
            f"{name} must come from the Secret"
        )
    assert env["ICEFEED_ROUTES_FILE"] == "/etc/icefeed/routes.toml"


def test_iceberg_catalog_is_plain_glue_configuration(by_kind) -> None:
    """ICEFEED_ICEBERG_CATALOG lives in the ConfigMap: Glue in the workers' region, and nothing the
    worker would treat as a secret (docs/secrets.md): the role supplies the credentials."""
    env = _env(one(by_kind, "Deployment"), by_kind)
    catalog = json.loads(env["ICEFEED_ICEBERG_CATALOG"])
    assert isinstance(catalog, dict) and catalog["type"] == "glue"
    assert catalog["glue.region"] == env["ICEFEED_AWS_REGION"]
    secret_like = re.compile(r"key|secret|password|passwd|token|credential|auth|signature|^header\.")
    assert not [name for name in catalog if secret_like.search(name)]
    assert all(isinstance(v, str) for v in catalog.values()), "pyiceberg catalog properties are strings"


def test_routes_file_comes_from_a_configmap_volume(by_kind) -> None:
    deployment = one(by_kind, "Deployment")
    mounts = {m["mountPath"]: m for m in _container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = mounts["/etc/icefeed"]
    assert mount["readOnly"] is True
    source = volumes[mount["name"]]["configMap"]
    assert {"key": "routes.toml", "path": "routes.toml"} in source["items"]
    configmaps = {cm["metadata"]["name"]: cm for cm in by_kind["ConfigMap"]}
    assert "[[ingestion]]" in configmaps[source["name"]]["data"]["routes.toml"]


def test_no_secret_values_in_the_manifests(manifests) -> None:
    kinds = {doc["kind"] for _, doc in manifests}
    assert "Secret" not in kinds, "the Secret is created out of band (README), never committed"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(K8S.glob("*.yaml")))
    assert not re.search(r"postgres(ql)?://[^\s'\"]*:[^\s'\"@]+@", text), "a DSN with a password"
    assert "token=" not in text.replace("token=...", "")


def test_service_account_carries_the_irsa_role(by_kind) -> None:
    sa = one(by_kind, "ServiceAccount")
    assert re.fullmatch(
        r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    )
    assert one(by_kind, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_service_pdb_and_networkpolicy_select_the_workers(by_kind) -> None:
    labels = _pod_labels(one(by_kind, "Deployment"))
    service = one(by_kind, "Service")
    assert _selects(service["spec"]["selector"], labels)
    assert {"name": "http", "port": 9108, "targetPort": "http", "protocol": "TCP"} in service["spec"]["ports"]
    pdb = one(by_kind, "PodDisruptionBudget")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    policy = one(by_kind, "NetworkPolicy")
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


# --- KEDA ----------------------------------------------------------------------------------------


def test_scaledobject_targets_the_deployment(by_kind) -> None:
    so = one(by_kind, "ScaledObject")["spec"]
    assert so["scaleTargetRef"]["name"] == one(by_kind, "Deployment")["metadata"]["name"]
    assert 1 <= so["minReplicaCount"] < so["maxReplicaCount"]
    assert so["cooldownPeriod"] >= 60
    assert so["pollingInterval"] > 0


def test_scaledobject_sqs_trigger(by_kind) -> None:
    (trigger,) = one(by_kind, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    meta = trigger["metadata"]
    assert meta["scaleOnInFlight"] == "true"
    assert re.fullmatch(r"[1-9]\d*", meta["queueLength"]), "queueLength is a positive integer string"
    env = _env(one(by_kind, "Deployment"), by_kind)
    assert meta["queueURL"] in env["ICEFEED_SQS_QUEUE_URLS"].split(","), "scale on the queue the workers drain"
    assert meta["awsRegion"] == env["ICEFEED_AWS_REGION"]
    assert "identityOwner" not in meta, "deprecated since KEDA 2.13: use the TriggerAuthentication"


def test_keda_authenticates_with_aws_pod_identity(by_kind) -> None:
    (trigger,) = one(by_kind, "ScaledObject")["spec"]["triggers"]
    auth = one(by_kind, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    identity = auth["spec"]["podIdentity"]
    assert identity["provider"] == "aws"
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", identity["roleArn"])


def test_in_flight_per_replica_fits_in_queue_length(by_kind) -> None:
    """KEDA counts in-flight messages: one replica must never ask for more than one replica."""
    (trigger,) = one(by_kind, "ScaledObject")["spec"]["triggers"]
    env = _env(one(by_kind, "Deployment"), by_kind)
    assert int(env["ICEFEED_SQS_MAX_IN_FLIGHT"]) <= int(trigger["metadata"]["queueLength"])


def test_scale_down_removes_at_most_one_pod_per_period(by_kind) -> None:
    so = one(by_kind, "ScaledObject")["spec"]
    scale_down = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["policies"], "a scale-down policy is required"
    grace = one(by_kind, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    for policy in scale_down["policies"]:
        assert policy["type"] == "Pods" and policy["value"] == 1, policy
        assert policy["periodSeconds"] >= grace, "the next removal waits for the previous drain"
    assert scale_down.get("selectPolicy", "Max") != "Disabled"


def _fleet_model() -> Any:
    """load/model.py (stdlib only), loaded by path: the infra venv does not install the worker."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fleet_model", REPO / "load" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_queue_length_is_the_fleet_models_answer_for_the_recorded_measurement(by_kind) -> None:
    """queueLength = max(r x T, in-flight window) for the per-replica rate r recorded next to it."""
    scaled = (K8S / "scaledobject.yaml").read_text(encoding="utf-8")
    found = re.search(r"# measured: files_per_s_1=([\d.]+) drain_seconds=(\d+)", scaled)
    assert found, "scaledobject.yaml must record the measurement queueLength is derived from"
    rate, drain = float(found.group(1)), int(found.group(2))
    (trigger,) = one(by_kind, "ScaledObject")["spec"]["triggers"]
    window = int(_env(one(by_kind, "Deployment"), by_kind)["ICEFEED_SQS_MAX_IN_FLIGHT"])
    assert int(trigger["metadata"]["queueLength"]) == _fleet_model().queue_length(rate, drain, window)
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert "python -m load model" in readme and "files/s" in readme and "drain" in readme


# --- CRD schemas ---------------------------------------------------------------------------------

CRDS = {
    "ScaledObject": "scaledobject",
    "TriggerAuthentication": "triggerauthentication",
    "ServiceMonitor": "servicemonitor",
    "PrometheusRule": "prometheusrule",
}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_custom_resources_match_their_schema(by_kind, kind: str) -> None:
    schema = load_schema(CRDS[kind])
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(one(by_kind, kind))


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("ScaledObject", ("spec", "triggers", 0, "metadata", "scaleOnInFlight"), True),
        ("ScaledObject", ("spec", "triggers", 0, "metadata", "queueLenght"), "5"),
        ("ScaledObject", ("spec", "cooldownPeriods"), 300),
        ("TriggerAuthentication", ("spec", "podIdentity", "identityOwner"), "workload"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "30 seconds"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "for"), "5 minutes"),
    ],
)
def test_schemas_reject_typical_mistakes(by_kind, kind: str, path: tuple[Any, ...], bad: Any) -> None:
    doc = yaml.safe_load(yaml.safe_dump(one(by_kind, kind)))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(load_schema(CRDS[kind])).validate(doc)


def test_servicemonitor_scrapes_the_service(by_kind) -> None:
    service = one(by_kind, "Service")
    monitor = one(by_kind, "ServiceMonitor")["spec"]
    assert _selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= port_names
    assert all(e.get("path", "/metrics") == "/metrics" for e in monitor["endpoints"])
