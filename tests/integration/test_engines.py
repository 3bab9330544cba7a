"""Many engines per fleet on the real stack: two Sail servers as two teams' clusters, one route
each. Both tables load exactly once (pyiceberg); a killed engine holds back only its own route,
and its backlog drains when it comes back; a rotated token file is picked up without a restart; a
rejected token is reported for that engine only."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Env, make_env, poll
from tests.integration.engines_support import TeamCluster, TokenGate
from worker.localstack import Stack

pytestmark = pytest.mark.integration

ROUTES = """
[[engine]]
name = "team_a"
url = "TEAM_A_URL"
token_file = "TOKEN_FILE"
max_batches_in_flight = 1

[[ingestion]]
name = "a"
bucket = "{bucket}"
prefix = "a/"
suffix = ".json"
format = "json"
table = "glue.{db}.a"
location = "s3://{warehouse}/{db}/a"
engine = "team_a"

[[ingestion]]
name = "b"
bucket = "{bucket}"
prefix = "b/"
suffix = ".json"
format = "json"
table = "glue.{db}.b"
location = "s3://{warehouse}/{db}/b"

[maintenance]
enabled = false
"""

FAST = {
    "ICEFEED_BATCH_MAX_WAIT_S": "0.2",
    "ICEFEED_SQS_BACKOFF_BASE_S": "1",
    "ICEFEED_SQS_BACKOFF_MAX_S": "2",
    "ICEFEED_SPARK_CLIENT_RETRIES": "1",  # an unreachable engine fails each call in about a second
}


def engines_env(stack: Stack, tmp: Path, url: str, token_file: Path) -> Env:
    text = ROUTES.replace("TEAM_A_URL", url).replace("TOKEN_FILE", str(token_file))
    return make_env(stack, tmp, f"e{int(time.time() * 1000) % 10**9:09d}", routes=text)


def put(env: Env, route: str, n: int) -> str:
    key = f"{route}/f{n:03d}.json"
    env.put(key, "".join(json.dumps({"id": n * 100 + i, "route": route}) + "\n" for i in range(3)).encode())
    return key


def loaded(env: Env, route: str) -> list[dict[str, Any]]:
    return [f for f in env.files() if f["key"].startswith(f"{route}/") and f["status"] == "LOADED"]


def latencies(files: list[dict[str, Any]]) -> list[float]:
    """upload → queryable: the S3 event time to the ledger's LOADED."""
    return [(f["finished_at"] - f["event_time"]).total_seconds() for f in files if f["event_time"] is not None]


def exact(env: Env, table: str, keys: list[str]) -> None:
    rows = Counter(r["id"] for r in env.table_rows(table))
    expected = Counter(int(k.split("/f")[1].split(".")[0]) * 100 + i for k in keys for i in range(3))
    assert rows == expected, f"{table}: lost {expected - rows}, duplicated {rows - expected}"


def test_a_killed_engine_holds_back_only_its_own_route(stack: Stack, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("")  # no token: a token makes the client use TLS, which this Sail does not speak
    team = TeamCluster(stack, tmp_path).start()
    env = engines_env(stack, tmp_path, team.url, token)
    try:
        env.migrate()
        env.start_worker(**FAST)
        a_keys = [put(env, "a", n) for n in range(4)]
        b_keys = [put(env, "b", n) for n in range(4)]
        env.wait_files(8)
        before = latencies(loaded(env, "b"))

        team.kill()  # team a's cluster goes away
        during = [put(env, "b", n) for n in range(4, 10)]
        a_keys += [put(env, "a", n) for n in range(4, 8)]
        poll(lambda: len(loaded(env, "b")) == 10, 90, "route b to load while team a's engine is down")
        outage = latencies([f for f in loaded(env, "b") if f["key"] in during])
        assert all(f["status"] in ("PENDING", "CLAIMED", "LOADED") for f in env.files() if f["key"].startswith("a/"))
        assert len(loaded(env, "a")) == 4  # nothing of team a's backlog could load

        def engine_states() -> dict[str, str]:
            result = env.cli("status", "--json")
            return {e["engine"]: e["state"] for e in json.loads(result.stdout).get("engines", [])}

        states = poll(
            lambda: (s := engine_states()).get("team_a") in ("open", "half_open") and s,
            60,
            "status to show team a failing",
        )
        assert states.get("default") == "closed", states
        text = env.cli("status").stdout
        assert "engine team_a is" in text and "failing since" in text, text
        p95_before, p95_outage = max(before), statistics.quantiles(outage, n=20)[-1] if len(outage) > 1 else outage[0]
        print(f"route b upload→queryable: before max {p95_before:.2f} s, during team a's outage p95 {p95_outage:.2f} s")
        assert p95_outage <= 2 * max(p95_before, 2.0), (before, outage)

        team.start()  # back on the same port: the backlog drains
        poll(lambda: len(loaded(env, "a")) == 8, 120, "team a's backlog to drain")
        assert env.stop_workers() == [0]
        exact(env, "a", a_keys)
        exact(env, "b", b_keys + during)
        logs = env.worker_logs()
        assert "engine_circuit_opened" in logs and "team_a" in logs
        assert all(f["status"] == "LOADED" for f in env.files())
    finally:
        team.kill()
        env.close()


def test_a_rotated_token_is_picked_up_and_a_rejected_one_is_named(stack: Stack, tmp_path: Path) -> None:
    worker_token, gate_token = tmp_path / "token", tmp_path / "accepted"
    worker_token.write_text("tok-1-canary-7d3f")
    gate_token.write_text("tok-1-canary-7d3f")
    team = TeamCluster(stack, tmp_path).start()
    gate = TokenGate(f"127.0.0.1:{team.port}", gate_token).start()
    env = engines_env(stack, tmp_path, gate.url, worker_token)
    try:
        env.migrate()
        env.start_worker(**FAST)
        keys = [put(env, "a", 0), put(env, "b", 0)]
        env.wait_files(2)

        # The cluster rotates its token; the mounted secret follows a moment later.
        gate_token.write_text("tok-2-canary-91ac")
        keys.append(put(env, "a", 1))
        poll(lambda: gate.refused > 0, 60, "the gate to refuse the old token")
        keys.append(put(env, "b", 1))
        poll(lambda: len(loaded(env, "b")) == 2, 60, "route b (default engine) to load meanwhile")
        worker_token.write_text("tok-2-canary-91ac")
        poll(lambda: len(loaded(env, "a")) == 2, 90, "team a's file to load with the new token, no restart")
        assert env.stop_workers() == [0]
        exact(env, "a", keys[0::2])
        exact(env, "b", keys[1::2])
        logs = env.worker_logs()
        assert "token rejected or expired" in logs
        for secret in ("tok-1-canary-7d3f", "tok-2-canary-91ac"):
            assert secret not in logs, "a token reached the log"
            assert all(secret not in str(f) for f in env.files()), "a token reached the ledger"
    finally:
        gate.stop()
        team.kill()
        env.close()
