"""Structure of infra/terraform, read with python-hcl2. The table-maintenance part (variables,
maintenance.tf and the worker-policy statements built from it) is also evaluated by terraform
itself when it is on PATH (no provider needed: see conftest.MaintenanceEval)."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
import yaml
from conftest import (
    EXAMPLE,
    K8S,
    STUB_LOCALS,
    TF,
    MaintenanceEval,
    Module,
    conditions,
    load_hcl,
    squash,
    statements,
)

REQUIRED_OUTPUTS = {"queue_url", "queue_arn", "dlq_url", "dlq_arn", "kms_key_arn", "worker_role_arn"}


def _condition_map(statement: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {c["variable"]: (c["test"], c["values"]) for c in conditions(statement)}


def _actions(module: Module, statement: dict[str, Any]) -> list[str]:
    actions = statement.get("actions", [])
    if isinstance(actions, str):  # a reference such as ${local.kms_admin_actions}
        ref = re.fullmatch(r"\$\{local\.(\w+)\}", actions)
        assert ref, f"cannot resolve actions {actions!r}"
        actions = module.locals[ref.group(1)]
    return list(actions)


def _principals(statement: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(p["type"], p["identifiers"]) for p in statement.get("principals", [])]


def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["sid"]: s for s in statements(document)}


# --- files -------------------------------------------------------------------------------------


def test_module_layout_follows_terraform_aws_modules_conventions() -> None:
    for name in ("versions.tf", "variables.tf", "main.tf", "outputs.tf", "README.md"):
        assert (TF / name).is_file(), name
    assert (EXAMPLE / "main.tf").is_file()


@pytest.mark.parametrize("path", sorted(TF.rglob("*.tf")), ids=lambda p: str(p.relative_to(TF)))
def test_every_tf_file_parses_and_is_in_canonical_layout(path) -> None:
    load_hcl(path)
    text = path.read_text(encoding="utf-8")
    assert "\t" not in text, "indent with spaces (terraform fmt)"
    assert text.endswith("\n") and not text.endswith("\n\n"), "exactly one trailing newline"
    for number, line in enumerate(text.splitlines(), 1):
        assert line == line.rstrip(), f"trailing whitespace on line {number}"
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"odd indentation on line {number}"


def test_versions(module: Module) -> None:
    terraform = module.blocks["terraform"][0]
    assert terraform["required_version"] == ">= 1.5"
    aws = (
        terraform["required_providers"][0]["aws"]
        if isinstance(terraform["required_providers"], list)
        else terraform["required_providers"]["aws"]
    )
    assert aws == {"source": "hashicorp/aws", "version": ">= 5.0"}


# --- variables and outputs ---------------------------------------------------------------------


@pytest.mark.parametrize("directory", [TF, EXAMPLE], ids=["module", "example"])
def test_every_variable_has_a_type_and_a_description(directory) -> None:
    for name, body in Module(directory).variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(str(body.get("description", "")).strip()) >= 10, f"variable {name} has no description"


def test_variables_are_validated_where_it_matters(module: Module) -> None:
    validated = {name for name, body in module.variables.items() if body.get("validation")}
    must = {
        "name",
        "routes",
        "visibility_timeout_seconds",
        "message_retention_seconds",
        "dlq_message_retention_seconds",
        "max_receive_count",
        "receive_wait_time_seconds",
        "oidc_provider_arn",
        "oidc_provider_url",
        "namespace",
        "service_account",
        "maintained_tables",
        "glue_catalog_id",
        "glue_region",
        "warehouse_kms_key_arns",
    }
    assert must <= validated, f"no validation on {sorted(must - validated)}"


def test_outputs_present_and_described(module: Module) -> None:
    outputs = module.outputs
    assert set(outputs) >= REQUIRED_OUTPUTS, f"missing outputs {REQUIRED_OUTPUTS - set(outputs)}"
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"
        assert "value" in body


def test_outputs_point_at_the_right_resources(module: Module) -> None:
    o = module.outputs
    assert o["queue_url"]["value"] == "${aws_sqs_queue.this.url}"
    assert o["queue_arn"]["value"] == "${aws_sqs_queue.this.arn}"
    assert o["dlq_url"]["value"] == "${aws_sqs_queue.dlq.url}"
    assert o["dlq_arn"]["value"] == "${aws_sqs_queue.dlq.arn}"
    assert o["kms_key_arn"]["value"] == "${aws_kms_key.this.arn}"
    assert o["worker_role_arn"]["value"] == "${aws_iam_role.worker.arn}"


# --- queues ------------------------------------------------------------------------------------


def test_queue_settings(module: Module) -> None:
    queues = module.resources("aws_sqs_queue")
    assert set(queues) == {"this", "dlq"}
    main, dlq = queues["this"], queues["dlq"]
    v = module.variables
    assert v["visibility_timeout_seconds"]["default"] == 300
    assert main["visibility_timeout_seconds"] == "${var.visibility_timeout_seconds}"
    assert v["receive_wait_time_seconds"]["default"] == 20
    assert main["receive_wait_time_seconds"] == "${var.receive_wait_time_seconds}"
    for queue in (main, dlq):
        assert queue["kms_master_key_id"] == "${aws_kms_key.this.arn}", "SSE with the customer key"
        assert "fifo_queue" not in queue, "S3 notifications need a standard queue"


def test_dlq_retention_is_longer_than_the_source(module: Module) -> None:
    v = module.variables
    source, dlq = v["message_retention_seconds"]["default"], v["dlq_message_retention_seconds"]["default"]
    assert source == 4 * 86400 and dlq == 14 * 86400 and dlq > source
    queues = module.resources("aws_sqs_queue")
    assert queues["this"]["message_retention_seconds"] == "${var.message_retention_seconds}"
    assert queues["dlq"]["message_retention_seconds"] == "${var.dlq_message_retention_seconds}"
    # ensured for any input, not only the defaults
    preconditions = [p for lc in queues["dlq"].get("lifecycle", []) for p in lc.get("precondition", [])]
    assert any(
        squash(p["condition"]) == "${var.dlq_message_retention_seconds > var.message_retention_seconds}"
        for p in preconditions
    ), "the DLQ needs a precondition dlq retention > source retention"


def test_redrive_policy_wires_max_receive_count(module: Module) -> None:
    assert module.variables["max_receive_count"]["default"] == 5
    assert module.variables["max_receive_count"]["type"] in ("number", "${number}")
    redrive = squash(module.resources("aws_sqs_queue")["this"]["redrive_policy"])
    assert redrive.startswith("${jsonencode(")
    assert re.search(r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.dlq\.arn", redrive)
    assert re.search(r"maxReceiveCount\s*=\s*var\.max_receive_count\b", redrive)


def test_dlq_accepts_redrive_only_from_the_source_queue(module: Module) -> None:
    allow = module.resources("aws_sqs_queue_redrive_allow_policy")
    assert set(allow) == {"dlq"}
    assert allow["dlq"]["queue_url"] == "${aws_sqs_queue.dlq.id}"
    policy = squash(allow["dlq"]["redrive_allow_policy"])
    assert re.search(r'redrivePermission\s*=\s*\\?"byQueue\\?"', policy)
    assert re.search(r"sourceQueueArns\s*=\s*\[aws_sqs_queue\.this\.arn\]", policy)


def test_queue_policy_allows_only_s3_from_the_routed_buckets(module: Module) -> None:
    policy = module.data("aws_iam_policy_document")["queue"]
    allows = [s for s in statements(policy) if s.get("effect", "Allow") == "Allow"]
    assert len(allows) == 1, "exactly one Allow: S3 notifications"
    s3 = allows[0]
    assert _principals(s3) == [("Service", ["s3.amazonaws.com"])]
    assert s3["actions"] == ["sqs:SendMessage"]
    assert s3["resources"] == ["${aws_sqs_queue.this.arn}"]
    conds = _condition_map(s3)
    assert conds["aws:SourceArn"][0] in {"ArnEquals", "ArnLike"}
    assert conds["aws:SourceArn"][1] == "${values(local.bucket_arns)}"
    assert conds["aws:SourceAccount"] == ("StringEquals", ["${local.source_account_id}"])
    resources = module.resources("aws_sqs_queue_policy")
    assert resources["this"]["policy"] == "${data.aws_iam_policy_document.queue.json}"


@pytest.mark.parametrize("document", ["queue", "dlq"])
def test_queue_policies_deny_insecure_transport(module: Module, document: str) -> None:
    denies = [s for s in statements(module.data("aws_iam_policy_document")[document]) if s.get("effect") == "Deny"]
    assert any(
        _condition_map(s).get("aws:SecureTransport") == ("Bool", ["false"]) and _principals(s) == [("*", ["*"])]
        for s in denies
    )


# --- KMS -----------------------------------------------------------------------------------------


def test_kms_key_rotates_and_carries_the_policy(module: Module) -> None:
    key = module.resources("aws_kms_key")["this"]
    assert key["enable_key_rotation"] is True
    assert key["policy"] == "${data.aws_iam_policy_document.kms.json}"


def test_kms_policy_lets_s3_encrypt_only_for_the_routed_buckets(module: Module) -> None:
    sids = _by_sid(module.data("aws_iam_policy_document")["kms"])
    s3 = [s for s in sids.values() if ("Service", ["s3.amazonaws.com"]) in _principals(s)]
    assert len(s3) == 1
    assert set(s3[0]["actions"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    conds = _condition_map(s3[0])
    assert conds["aws:SourceArn"] == ("ArnEquals", "${values(local.bucket_arns)}")
    assert conds["aws:SourceAccount"] == ("StringEquals", ["${local.source_account_id}"])


def test_kms_policy_root_administers_and_worker_decrypts(module: Module) -> None:
    sids = _by_sid(module.data("aws_iam_policy_document")["kms"])
    root = sids["KeyAdministrationByAccount"]
    assert _principals(root) == [("AWS", ["arn:${local.partition}:iam::${local.account_id}:root"])]
    admin = set(_actions(module, root))
    assert {"kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:EnableKeyRotation", "kms:DescribeKey"} <= admin
    assert not admin & {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}, "administration, not use"
    worker = sids["WorkersReadEncryptedMessages"]
    assert _principals(worker) == [("AWS", ["${aws_iam_role.worker.arn}"])]
    assert set(worker["actions"]) == {"kms:Decrypt", "kms:GenerateDataKey"}  # receive, and send a renewal


# --- IAM -----------------------------------------------------------------------------------------


def test_no_wildcard_actions_and_resources_only_where_aws_requires_them(module: Module) -> None:
    for name, document in module.data("aws_iam_policy_document").items():
        for statement in statements(document):
            if statement.get("effect", "Allow") != "Allow":
                continue  # Deny sqs:* for non-TLS is a guard, not a grant
            for action in _actions(module, statement):
                assert "*" not in action, f"{name}/{statement.get('sid')}: wildcard action {action}"
            resources = statement.get("resources", [])
            if name == "kms":
                assert resources == ["*"], "a key policy statement's resource is the key itself: '*'"
            else:
                assert "*" not in resources, f"{name}/{statement.get('sid')}: '*' resource"


def test_worker_role_trusts_only_its_service_account(module: Module) -> None:
    doc = module.data("aws_iam_policy_document")["worker_assume"]
    (trust,) = statements(doc)
    assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert _principals(trust) == [("Federated", ["${var.oidc_provider_arn}"])]
    conds = _condition_map(trust)
    assert conds["${local.oidc_issuer}:sub"] == (
        "StringEquals",
        ["system:serviceaccount:${var.namespace}:${var.service_account}"],
    )
    assert conds["${local.oidc_issuer}:aud"] == ("StringEquals", ["sts.amazonaws.com"])
    role = module.resources("aws_iam_role")["worker"]
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.worker_assume.json}"
    assert module.locals["oidc_issuer"] == '${trimprefix(var.oidc_provider_url, "https://")}'


def _maintenance_locals() -> set[str]:
    return {name for item in load_hcl(TF / "maintenance.tf").get("locals", []) for name in item}


def _is_maintenance(statement_or_block: dict[str, Any]) -> bool:
    """Built from maintenance.tf's locals (the table-maintenance statements)."""
    return bool(set(re.findall(r"\blocal\.(\w+)", str(statement_or_block))) & _maintenance_locals())


def _ingestion_statements(module: Module) -> list[dict[str, Any]]:
    """The worker's statements other than table maintenance's (static, or dynamic on other inputs)."""
    document = module.data("aws_iam_policy_document")["worker"]
    found = list(document.get("statement", []))
    for dyn in document.get("dynamic", []):
        if "statement" in dyn and not _is_maintenance(dyn):
            found.extend(dyn["statement"]["content"])
    return found


def test_worker_policy_is_least_privilege(module: Module) -> None:
    sids = _by_sid(module.data("aws_iam_policy_document")["worker"])
    consume = sids["ConsumeQueue"]
    assert set(consume["actions"]) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
    }
    assert consume["resources"] == ["${aws_sqs_queue.this.arn}"]
    # SendMessage to this queue only: a waiting file's message is sent again fresh at its last
    # allowed receive (the runner's renewal), never to another queue.
    assert "sqs:SendMessage" in consume["actions"]
    dlq = sids["InspectDeadLetterQueue"]
    assert set(dlq["actions"]) == {"sqs:GetQueueAttributes", "sqs:ReceiveMessage"}
    assert dlq["resources"] == ["${aws_sqs_queue.dlq.arn}"]
    read = sids["ReadRoutedObjects"]
    assert read["actions"] == ["s3:GetObject"], "HeadObject is authorised by s3:GetObject"
    assert read["resources"] == "${local.routed_object_arns}"
    assert "${local.bucket_arns[bucket]}/${r.prefix}*${r.suffix}" in squash(module.locals["routed_object_arns"])
    decrypt = sids["DecryptQueueMessages"]
    assert set(decrypt["actions"]) == {"kms:Decrypt", "kms:GenerateDataKey"}  # receive; send a renewal
    assert decrypt["resources"] == ["${aws_kms_key.this.arn}"]
    every_action = {a for s in statements(module.data("aws_iam_policy_document")["worker"]) for a in s["actions"]}
    assert "s3:HeadObject" not in every_action, "not an IAM action"
    assert not {"sqs:PurgeQueue", "sqs:StartMessageMoveTask", "sqs:SendMessageBatch"} & every_action
    # Writing objects: table maintenance's (below) and the bad records' (only under their
    # locations), never on the routed buckets; deleting: maintenance's alone.
    ingestion = [s for s in _ingestion_statements(module) if s["sid"] != "KeepBadRecords"]
    ingestion_actions = {a for s in ingestion for a in s["actions"]}
    assert not {"s3:PutObject", "s3:DeleteObject"} & ingestion_actions
    assert not any(a.startswith("glue:") for a in ingestion_actions)


def test_worker_may_list_only_the_routed_prefixes(module: Module) -> None:
    listing = [s for s in _ingestion_statements(module) if s["actions"] == ["s3:ListBucket"]]
    assert len(listing) == 1
    (cond,) = conditions(listing[0])
    assert cond["test"] == "StringLike" and cond["variable"] == "s3:prefix"
    assert squash(cond["values"]) == '${[for p in condition.value : "${p}*"]}'


def test_keda_scaler_role_reads_queue_depth_only(module: Module) -> None:
    (statement,) = statements(module.data("aws_iam_policy_document")["keda_scaler"])
    assert statement["actions"] == ["sqs:GetQueueAttributes"]
    assert statement["resources"] == ["${aws_sqs_queue.this.arn}"]
    (trust,) = statements(module.data("aws_iam_policy_document")["keda_scaler_assume"])
    assert _condition_map(trust)["${local.oidc_issuer}:sub"][1] == [
        "system:serviceaccount:${var.keda_namespace}:${var.keda_service_account}"
    ]


# --- bucket notifications and routes -------------------------------------------------------------


def test_exactly_one_notification_resource_per_bucket(module: Module, example: Module) -> None:
    notifications = module.resources("aws_s3_bucket_notification")
    assert list(notifications) == ["this"], "one aws_s3_bucket_notification block, for_each over buckets"
    assert not example.resources("aws_s3_bucket_notification"), "the example must not add a second one"
    n = notifications["this"]
    assert n["for_each"] == "${var.create_bucket_notifications ? var.routes : {}}"
    assert n["bucket"] == "${each.key}"
    assert module.variables["routes"]["type"].startswith("${map("), "routes is keyed by bucket name"
    (dyn,) = n["dynamic"]
    assert dyn["queue"]["for_each"] == "${local.queue_configurations[each.key]}"


def test_notification_events_cover_every_object_creation(module: Module) -> None:
    (dyn,) = module.resources("aws_s3_bucket_notification")["this"]["dynamic"]
    (content,) = dyn["queue"]["content"]
    assert content["events"] == ["s3:ObjectCreated:*"], "ObjectCreated:* includes CompleteMultipartUpload"
    assert content["queue_arn"] == "${queue.value.queue_arn}"
    assert "queue_arn = aws_sqs_queue.this.arn" in squash(module.locals["queue_configurations"])
    assert module.locals["notification_events"] == ["s3:ObjectCreated:*"]


def test_notifications_wait_for_the_queue_and_key_policies(module: Module) -> None:
    depends = module.resources("aws_s3_bucket_notification")["this"]["depends_on"]
    assert "${aws_sqs_queue_policy.this}" in depends and "${aws_kms_key.this}" in depends


def test_overlap_precondition_is_in_place(module: Module) -> None:
    n = module.resources("aws_s3_bucket_notification")["this"]
    preconditions = [p for lc in n["lifecycle"] for p in lc["precondition"]]
    assert any(squash(p["condition"]) == "${length(local.route_overlaps[each.key]) == 0}" for p in preconditions)
    message = next(p["error_message"] for p in preconditions if "route_overlaps" in p["condition"])
    assert "${each.key}" in message and 'join("; ", local.route_overlaps[each.key])' in message
    overlaps = squash(module.locals["route_overlaps"])
    assert overlaps.startswith("${{for bucket, routes in var.routes : bucket => flatten(")
    # the rule: one prefix is a prefix of the other AND one suffix is a suffix of the other,
    # over every unordered pair of routes of the same bucket
    assert (
        "if i < j && (startswith(a.prefix, b.prefix) || startswith(b.prefix, a.prefix))"
        " && (endswith(a.suffix, b.suffix) || endswith(b.suffix, a.suffix))"
    ) in overlaps
    assert "for i, a in routes" in overlaps and "for j, b in routes" in overlaps


def test_route_filters_default_to_match_everything(module: Module) -> None:
    routes_type = squash(module.variables["routes"]["type"])
    assert 'prefix = optional(string, "")' in routes_type and 'suffix = optional(string, "")' in routes_type


def _example_routes(example: Module) -> dict[str, list[dict[str, str]]]:
    (call,) = example.modules.values()
    assert call["source"] == "../.."
    return call["routes"]


def test_example_has_two_routes_on_one_bucket_that_do_not_overlap(example: Module) -> None:
    routes = _example_routes(example)
    assert len(routes) == 1
    (bucket_routes,) = routes.values()
    assert len(bucket_routes) == 2
    # Sufficient for "no overlap" under the module's rule: no prefix is a prefix of another.
    for i, a in enumerate(bucket_routes):
        for b in bucket_routes[i + 1 :]:
            assert a["prefix"] and b["prefix"]
            assert not a["prefix"].startswith(b["prefix"]) and not b["prefix"].startswith(a["prefix"]), (a, b)


def test_example_uses_the_module_required_inputs(module: Module, example: Module) -> None:
    (call,) = example.modules.values()
    required = {name for name, body in module.variables.items() if "default" not in body}
    assert required <= set(call), f"example misses {required - set(call)}"
    assert set(call) - {"source"} <= set(module.variables), "example passes unknown inputs"
    assert call["dlq_message_retention_seconds"] > call["message_retention_seconds"]


def test_worker_routes_file_matches_the_terraform_routes(example: Module) -> None:
    """What S3 sends (Terraform routes) and what the worker routes (routes.toml) must agree."""
    configmaps = [d for d in yaml.safe_load_all((K8S / "configmap.yaml").read_text()) if d]
    (routes_cm,) = [d for d in configmaps if "routes.toml" in d.get("data", {})]
    ingestions = tomllib.loads(routes_cm["data"]["routes.toml"])["ingestion"]
    from_toml = {(i["name"], i["bucket"], i.get("prefix", ""), i.get("suffix", "")) for i in ingestions}
    from_tf = {
        (r["name"], bucket, r.get("prefix", ""), r.get("suffix", ""))
        for bucket, routes in _example_routes(example).items()
        for r in routes
    }
    assert from_toml == from_tf


# --- table maintenance: Glue catalog and warehouse ------------------------------------------------

MAINTENANCE_SIDS = {
    "ReadMaintainedDatabases",
    "CommitMaintainedTables",
    "MaintainTableObjects",
    "ListMaintainedTables0",
    "UseWarehouseKeysThroughS3",
}


def test_maintained_tables_is_optional_and_empty_by_default(module: Module) -> None:
    v = module.variables
    assert v["maintained_tables"]["default"] == []
    assert squash(v["maintained_tables"]["type"]) == (
        "${list(object({database = string, table = string, location = string}))}"
    )
    for name in ("glue_catalog_id", "glue_region"):
        assert v[name]["default"] is None, name
    assert v["warehouse_kms_key_arns"]["default"] == []


def test_every_maintenance_statement_is_dynamic_on_the_maintenance_locals(module: Module) -> None:
    """A statement that is always there cannot grant anything of maintenance's; each maintenance
    statement exists only through a for_each on maintenance.tf's locals (empty without tables)."""
    document = module.data("aws_iam_policy_document")["worker"]
    assert not any(_is_maintenance(s) for s in document.get("statement", []))
    blocks = [d["statement"] for d in document.get("dynamic", []) if "statement" in d and _is_maintenance(d)]
    assert {b["content"][0]["sid"].replace("${statement.key}", "0") for b in blocks} == MAINTENANCE_SIDS
    for block in blocks:
        assert _is_maintenance({"for_each": block["for_each"]}), block["content"][0]["sid"]


def _normalised(statements_: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order-free where IAM is order-free (actions, resources, condition values)."""
    return [
        {
            "sid": s["sid"],
            "effect": s["effect"],
            "actions": set(s["actions"]),
            "resources": {s["resources"]} if isinstance(s["resources"], str) else set(s["resources"]),
            "conditions": {(c["test"], c["variable"], frozenset(c["values"])) for c in s["conditions"]},
        }
        for s in statements_
    ]


TABLES = [
    {"database": "sales", "table": "orders", "location": "s3://acme-lakehouse/sales/orders"},
    {"database": "web", "table": "clicks", "location": "s3://acme-lakehouse/web/clicks/"},
    {"database": "web", "table": "views", "location": "s3://archive.acme/w/date=2024/views"},
]
WAREHOUSE_KEY = "arn:aws:kms:eu-west-1:111122223333:key/0a1b2c3d-0000-4000-8000-0123456789ab"


def test_no_maintenance_statement_without_maintained_tables(maintenance_eval: MaintenanceEval) -> None:
    assert len(maintenance_eval.statement_outputs) == len(MAINTENANCE_SIDS), "every maintenance statement is rendered"
    rendered, outputs = maintenance_eval.evaluate()
    assert rendered == [] and outputs == {"iceberg_catalog_properties": None}
    # a warehouse key alone grants nothing either
    rendered, _ = maintenance_eval.evaluate(warehouse_kms_key_arns=[WAREHOUSE_KEY])
    assert rendered == []


def test_maintenance_statements_grant_exactly_this(maintenance_eval: MaintenanceEval) -> None:
    rendered, outputs = maintenance_eval.evaluate(maintained_tables=TABLES, warehouse_kms_key_arns=[WAREHOUSE_KEY])
    glue = f"arn:aws:glue:{STUB_LOCALS['region']}:{STUB_LOCALS['account_id']}"
    catalog, databases = f"{glue}:catalog", {f"{glue}:database/sales", f"{glue}:database/web"}
    tables = {f"{glue}:table/sales/orders", f"{glue}:table/web/clicks", f"{glue}:table/web/views"}
    via_s3 = {("StringLike", "kms:ViaService", frozenset({"s3.*.amazonaws.com"}))}
    assert _normalised(rendered) == [
        {
            "sid": "ReadMaintainedDatabases",
            "effect": "Allow",
            "actions": {"glue:GetDatabase"},
            "resources": {catalog, *databases},
            "conditions": set(),
        },
        {
            "sid": "CommitMaintainedTables",
            "effect": "Allow",
            "actions": {"glue:GetTable", "glue:UpdateTable"},
            "resources": {catalog, *databases, *tables},
            "conditions": set(),
        },
        {
            # Only under each location, and the '/' before '*' keeps sales/orders from covering
            # sales/orders_v2; a trailing '/' in the input does not double.
            "sid": "MaintainTableObjects",
            "effect": "Allow",
            "actions": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"},
            "resources": {
                "arn:aws:s3:::acme-lakehouse/sales/orders/*",
                "arn:aws:s3:::acme-lakehouse/web/clicks/*",
                "arn:aws:s3:::archive.acme/w/date=2024/views/*",
            },
            "conditions": set(),
        },
        {
            "sid": "ListMaintainedTables0",
            "effect": "Allow",
            "actions": {"s3:ListBucket"},
            "resources": {"arn:aws:s3:::acme-lakehouse"},
            "conditions": set(),  # unconditional: a new key's existence check needs it (iam.tf)
        },
        {
            "sid": "ListMaintainedTables1",
            "effect": "Allow",
            "actions": {"s3:ListBucket"},
            "resources": {"arn:aws:s3:::archive.acme"},
            "conditions": set(),
        },
        {
            "sid": "UseWarehouseKeysThroughS3",
            "effect": "Allow",
            "actions": {"kms:Decrypt", "kms:GenerateDataKey"},
            "resources": {WAREHOUSE_KEY},
            "conditions": via_s3,
        },
    ]
    assert json.loads(outputs["iceberg_catalog_properties"]) == {"type": "glue", "glue.region": STUB_LOCALS["region"]}


def test_maintenance_in_a_glue_catalog_of_another_account_and_region(maintenance_eval: MaintenanceEval) -> None:
    rendered, outputs = maintenance_eval.evaluate(
        maintained_tables=TABLES[:1], glue_catalog_id="444455556666", glue_region="us-east-2"
    )
    by_sid = {s["sid"]: s for s in rendered}
    assert set(by_sid["CommitMaintainedTables"]["resources"]) == {
        "arn:aws:glue:us-east-2:444455556666:catalog",
        "arn:aws:glue:us-east-2:444455556666:database/sales",
        "arn:aws:glue:us-east-2:444455556666:table/sales/orders",
    }
    assert "UseWarehouseKeysThroughS3" not in by_sid, "no key given: no KMS statement"
    assert json.loads(outputs["iceberg_catalog_properties"]) == {
        "type": "glue",
        "glue.region": "us-east-2",
        "glue.id": "444455556666",
    }


_NAMES = "maintained_tables: database and table must match"
_LOCATION = "maintained_tables: location must be s3://BUCKET/PATH"
_ORDERS = {"database": "sales", "table": "orders"}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse/sales/*"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse/sales/ord?rs"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse/${aws:username}/t"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse/"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse/sales//orders"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3a://acme-lakehouse/sales/orders"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "acme-lakehouse/sales/orders"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://Acme_Lakehouse/sales/orders"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "location": "s3://acme-lakehouse/sales orders"}]}, _LOCATION),
        ({"maintained_tables": [{**_ORDERS, "database": "Sales", "location": "s3://b-1/t"}]}, _NAMES),
        ({"maintained_tables": [{**_ORDERS, "table": "ord*", "location": "s3://b-1/t"}]}, _NAMES),
        ({"maintained_tables": [{**_ORDERS, "table": "", "location": "s3://b-1/t"}]}, _NAMES),
        (
            {"maintained_tables": [{**_ORDERS, "location": "s3://b-1/a"}, {**_ORDERS, "location": "s3://b-1/b"}]},
            "maintained_tables: each database.table may be listed once.",
        ),
        ({"glue_catalog_id": "12345"}, "glue_catalog_id must be a 12-digit AWS account ID or null."),
        ({"glue_region": "eu_west_1"}, "glue_region must be an AWS region name"),
        ({"warehouse_kms_key_arns": ["alias/warehouse"]}, "warehouse_kms_key_arns must hold KMS key ARNs"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_maintenance_inputs_are_validated(
    maintenance_eval: MaintenanceEval, inputs: dict[str, Any], message: str
) -> None:
    error = maintenance_eval.error(**inputs)
    assert error.count("Invalid value for variable") == 1, error
    assert message in error, error


def test_example_maintains_the_worker_routes_tables(example: Module) -> None:
    """The tables the worker role may maintain are the tables routes.toml writes, at the same
    locations (every route's table is maintained unless [maintenance] says otherwise)."""
    (call,) = example.modules.values()
    configmaps = [d for d in yaml.safe_load_all((K8S / "configmap.yaml").read_text()) if d]
    (routes_cm,) = [d for d in configmaps if "routes.toml" in d.get("data", {})]
    ingestions = tomllib.loads(routes_cm["data"]["routes.toml"])["ingestion"]
    from_toml = {(*i["table"].split(".")[1:], i["location"]) for i in ingestions}
    from_tf = {(t["database"], t["table"], t["location"]) for t in call["maintained_tables"]}
    assert from_tf == from_toml


def test_configmap_catalog_is_the_module_output_for_the_example(
    example: Module, maintenance_eval: MaintenanceEval
) -> None:
    (call,) = example.modules.values()
    (provider,) = example.blocks["provider"]
    region = provider["aws"]["region"]
    _, outputs = maintenance_eval.evaluate(maintained_tables=call["maintained_tables"], glue_region=region)
    configmaps = [d for d in yaml.safe_load_all((K8S / "configmap.yaml").read_text()) if d]
    (config,) = [d for d in configmaps if d["metadata"]["name"] == "icefeed-config"]
    assert json.loads(config["data"]["ICEFEED_ICEBERG_CATALOG"]) == json.loads(outputs["iceberg_catalog_properties"])


def test_maintenance_output_points_at_the_catalog_properties(module: Module) -> None:
    value = module.outputs["iceberg_catalog_properties"]["value"]
    assert value == "${local.maintenance_enabled ? jsonencode(local.iceberg_catalog_properties) : null}"
    assert module.locals["maintenance_enabled"] == "${length(var.maintained_tables) > 0}"


# --- checkov suppressions ------------------------------------------------------------------------


def test_every_checkov_skip_in_terraform_has_a_reason() -> None:
    for path in TF.rglob("*.tf"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                assert re.search(r"#\s*checkov:skip=CKV2?_AWS_\d+:.{15,}", line), f"{path.name}: {line.strip()}"


def test_bad_records_are_written_only_under_their_locations(module: Module) -> None:
    """A quarantining route's records go to objects under its bad_records_location: the worker may
    put and get there (and nowhere else by this statement), only when locations are given."""
    (block,) = [
        d["statement"]
        for d in module.data("aws_iam_policy_document")["worker"].get("dynamic", [])
        if "statement" in d and d["statement"]["content"][0]["sid"] == "KeepBadRecords"
    ]
    assert squash(block["for_each"]) == "${length(var.bad_records_locations) > 0 ? [1] : []}"
    content = block["content"][0]
    assert set(content["actions"]) == {"s3:GetObject", "s3:PutObject"}
    assert content["resources"] == "${local.bad_records_object_arns}"
    arns = squash(module.locals["bad_records_object_arns"])
    assert '/(.+?)/?$", l))}/*"' in arns, "one wildcard, after a '/', trailing '/' dropped"
    v = module.variables
    assert v["bad_records_locations"]["default"] == []
    (rule,) = v["bad_records_locations"]["validation"]
    assert "(/[A-Za-z0-9._=@-]+)+/?$" in squash(rule["condition"])
