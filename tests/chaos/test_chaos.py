"""Chaos suite: the exactly-once promise under crashes, redeliveries and infrastructure failures.

Every scenario drives the REAL local stack (moto S3/SQS/Glue, Sail, PostgreSQL) with several
``python -m worker run`` processes, then checks, with pyiceberg, that the table holds EXACTLY the
uploaded rows (unique ids per file, compared as multisets), that every file is LOADED once in the
ledger with the right row count and a COMMITTED batch as lineage, that nothing is stuck and that
the queue and the DLQ are empty. Results go to the report printed at the end of the session.

Random choices derive from ``ICEFEED_CHAOS_SEED`` (default in support.SEED).
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import (
    BACKOFF_MAX_S,
    DOOMED,
    NOTES,
    SEED,
    Expected,
    PgKiller,
    finish,
    loaded_count,
    not_visible,
    s3_message,
    s3_record,
    sail_answers,
    settle,
    sns_message,
    spark_round_trip,
    start,
    stop_all,
    terminate_backends,
    wait_exit,
)
from tests.harness import Env, make_env, poll

pytestmark = pytest.mark.chaos

TRIALS = 3
CHAOS_S = 30.0  # longest PostgreSQL chaos phase
MAX_DEATHS = 6  # worker deaths replaced before the PostgreSQL chaos test gives up
EXIT_POINTS = ("after_claim", "after_write_start", "after_commit", "after_finalize")
GROUPS = EXIT_POINTS
LABELS = {p: f"kill -9 at {p} ({TRIALS} trials)" for p in EXIT_POINTS}
# How the doomed worker's batch may end, per fault point: a sweeper releases an uncommitted batch
# (ABORTED, recovered_by set) or finalizes a committed one (COMMITTED, recovered_by set); a batch
# finalized before the crash needs no recovery (COMMITTED, recovered_by NULL). after_write_start
# fires while the append is on its way to the engine: the commit may or may not land.
EXPECTED_PATHS = {
    "after_claim": {"released"},
    "after_write_start": {"released", "recovered-committed"},
    "after_commit": {"recovered-committed"},
    "after_finalize": {"finalized-by-owner"},
}


# -- scenario 1: kill -9 at every fault point ------------------------------------------------------


@dataclass
class GroupRun:
    group: str
    env: Env
    exp: Expected
    error: BaseException | None = None
    paths: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _path(batch: dict[str, Any]) -> str:
    if batch["status"] == "COMMITTED":
        return "recovered-committed" if batch["recovered_by"] else "finalized-by-owner"
    if batch["status"] == "ABORTED":
        return "released" if batch["recovered_by"] else f"aborted-by-owner({batch['error_class']})"
    return batch["status"]


def _run_group(run: GroupRun) -> None:
    """TRIALS crash trials in one env: a doomed worker alone takes fresh files and dies at the
    fault point; then 1–2 clean workers recover; each trial must settle before the next."""
    started = time.monotonic()
    env, exp, group = run.env, run.exp, run.group
    rng = random.Random(f"{SEED}:{group}")
    try:
        env.migrate()
        seen: set[str] = set()
        for t in range(TRIALS):
            doomed = start(env, f"doomed{t}", ICEFEED_FAULTS=f"{group}=exit", **DOOMED)
            for i in range(rng.randint(3, 6)):
                exp.upload(env, f"events/t{t}/file-{i:02}.json", rng.randint(1, 5))
            code = wait_exit(doomed, 60, f"trial {t}: the doomed worker to hit {group}")
            assert code == 137, f"trial {t}: doomed worker exited {code} instead of dying at {group}"
            env.workers.remove(doomed)
            mine = {b["id"] for b in env.sql("SELECT id::text AS id FROM batches")} - seen
            survivors = [start(env, f"survivor{t}-{k}") for k in range(1 + t % 2)]
            settle(env, exp, 90)
            codes = stop_all(env)
            assert codes == [0] * len(survivors), f"trial {t}: survivors exited {codes}"
            batches = env.sql(
                "SELECT id::text AS id, status, recovered_by, error_class FROM batches WHERE id::text = ANY($1)",
                sorted(mine),
            )
            paths = sorted(_path(b) for b in batches)
            run.paths.append("+".join(paths))
            assert paths and set(paths) <= EXPECTED_PATHS[group], f"trial {t}: doomed batches ended {paths}"
            seen = {b["id"] for b in env.sql("SELECT id::text AS id FROM batches")}
    except BaseException as exc:  # noqa: BLE001 - reported with ledger and logs by the test (main thread)
        run.error = exc
    finally:
        run.seconds = time.monotonic() - started


@pytest.fixture(scope="module")
def fault_groups(
    stack: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, tuple[GroupRun, Future[None]]]]:
    """Runs the crash groups selected in this session concurrently, one env each: the trials of
    a group are sequential (each waits for lease expiry and redelivery), groups overlap."""
    wanted = [
        g
        for g in GROUPS
        if any(
            getattr(item, "originalname", "") == "test_kill_9_at_fault_point"
            and getattr(item, "callspec", None) is not None
            and item.callspec.params.get("group") == g
            for item in request.session.items
        )
    ]
    runs = {}
    for g in wanted:  # boto3 clients are created here, in the main thread
        env = make_env(stack, tmp_path_factory.mktemp(f"chaos-{g}"), uuid.uuid4().hex[:10])
        runs[g] = GroupRun(g, env, Expected(env.bucket))
    try:
        with ThreadPoolExecutor(max(1, len(runs)), thread_name_prefix="chaos") as pool:
            futures = {g: pool.submit(_run_group, run) for g, run in runs.items()}
            yield {g: (runs[g], futures[g]) for g in wanted}
    finally:
        for run in runs.values():
            run.env.close()


@pytest.mark.parametrize("group", GROUPS)
def test_kill_9_at_fault_point(fault_groups: dict[str, tuple[GroupRun, Future[None]]], group: str) -> None:
    run, future = fault_groups[group]
    future.result(timeout=280)
    NOTES.append(f"{LABELS[group]}: doomed batches ended {run.paths} ({run.seconds:.0f} s)")
    finish(run.env, run.exp, LABELS[group], timeout=10, error=run.error)


# -- scenario 2: every event twice, shuffled ---------------------------------------------------------


def test_every_event_delivered_twice_and_shuffled(env: Env) -> None:
    rng = random.Random(f"{SEED}:duplicates")
    env.migrate()
    exp = Expected(env.bucket)
    keys = [f"events/dup/f{i:02}.json" for i in range(24)]
    keys += ["events/dup/with space 1.json", "events/dup/plus+sign.json", "events/dup/a=1/b=2/deep.json"]
    for key in keys:
        exp.upload(env, key, rng.randint(1, 4))
    # Overwrites before any worker runs: the older version's events must end SKIPPED (Superseded)
    # whatever order they arrive in, and only the newest rows may land.
    for key in rng.sample(keys, 6):
        exp.upload(env, key, rng.randint(1, 4))
    # The real notifications are queued already; craft one more delivery of EVERY event (both
    # versions of overwritten keys), shuffle them, and pack them as AWS-style, moto-style and
    # SNS-wrapped messages of 1–3 records.
    records = [
        s3_record(env.bucket, v, moto_style=rng.random() < 0.5) for v in [*exp.current.values(), *exp.superseded]
    ]
    rng.shuffle(records)
    bodies = []
    while records:
        take = rng.randint(1, 3)
        chunk, records = records[:take], records[take:]
        bodies.append(sns_message(chunk) if rng.random() < 0.3 else s3_message(chunk))
    for i in range(3):
        start(env, f"w{i}")
    for body in bodies:  # sent while the workers are already taking the real ones
        env.send_raw(body)
    finish(env, exp, "every event delivered twice, shuffled (3 workers)")
    assert stop_all(env) == [0, 0, 0]


# -- scenario 3: Sail killed and restarted mid-batch ---------------------------------------------------


def _pg_now(env: Env) -> Any:
    return env.sql("SELECT clock_timestamp() AS t")[0]["t"]


def _metadata_location(glue: Any, env: Env) -> str:
    try:
        return str(glue.get_table(DatabaseName=env.db, Name="events")["Table"]["Parameters"]["metadata_location"])
    except glue.exceptions.EntityNotFoundException:
        return ""


def _warnings(env: Env) -> Counter[str]:
    """Warning/error events of the workers, with their error class: what the faults caused."""
    seen: Counter[str] = Counter()
    for line in env.worker_logs().splitlines():
        if line.startswith("{") and ('"level": "warning"' in line or '"level": "error"' in line):
            doc = json.loads(line)
            seen[f"{doc.get('event')}({doc.get('error_class', '')})".replace("()", "")] += 1
    return seen


def test_sail_killed_and_restarted_mid_batch(env: Env, stack: Any) -> None:
    rng = random.Random(f"{SEED}:sail")
    env.migrate()
    exp = Expected(env.bucket)
    glue = stack.client("glue")
    gate = env.tmp / "gate"
    restarts: list[tuple[str, Any]] = []

    def restart(why: str) -> None:
        restarts.append((why, _pg_now(env)))
        stack.restart_sail()

    start(env, "held", ICEFEED_FAULTS=f"after_write_start=hold:{gate}")
    try:
        for i in range(12):
            exp.upload(env, f"events/sail/a{i:02}.json", rng.randint(1, 5))
        poll(lambda: (gate / "after_write_start.reached").exists(), 60, "a write in flight")
        restart("held batch: Spark write just issued")
        (gate / "after_write_start.release").touch()
        start(env, "helper")
        # The instant a commit lands (the table's metadata pointer moves in Glue): the writer has
        # not read its response / row counts yet, the ledger says WRITING.
        poll(lambda: _metadata_location(glue, env), 60, "the first commit")
        before = _metadata_location(glue, env)
        for i in range(30):
            exp.upload(env, f"events/sail/b{i:02}.json", rng.randint(1, 5))
        poll(lambda: _metadata_location(glue, env) != before, 60, "a commit", 0.005)
        restart("a commit just landed")
        # Random moments of a continuous load.
        for k in range(2):
            for i in range(15):
                exp.upload(env, f"events/sail/c{k}-{i:02}.json", rng.randint(1, 5))
            time.sleep(rng.uniform(0.2, 1.0))  # fault timing jitter, not a wait for a condition
            restart(f"random moment {k}")
        finish(env, exp, f"Sail kill -9 + restart mid-batch ({len(restarts)} restarts)", timeout=150)
        assert stop_all(env) == [0, 0]
    finally:
        # The stack is shared by the whole session: leave Sail answering real queries.
        if not sail_answers(stack):
            stack.restart_sail()
        poll(lambda: spark_round_trip(stack), 60, "Sail to answer a Spark Connect query", 0.5)
    batches = env.sql("SELECT created_at, finished_at FROM batches")
    mid = [
        why
        for why, at in restarts
        if any(b["created_at"] < at and (b["finished_at"] is None or b["finished_at"] > at) for b in batches)
    ]
    NOTES.append(
        f"Sail: {len(restarts)} restarts, {len(mid)} inside a batch's WRITING window ({mid}); "
        f"worker warnings: {dict(_warnings(env))}"
    )
    assert mid, "no Sail restart happened while a batch was in flight"


# -- scenario 4: PostgreSQL connections terminated ----------------------------------------------------


def test_pg_backends_of_a_lock_waiting_worker_terminated(env: Env) -> None:
    """Deterministic PostgreSQL fault: kill the backends of a worker whose batch waits for the
    fleet-wide table lock (pinned by another worker held mid-write), then let everything settle.
    The workers keep the harness's retry backoff (1–2 s): the budget this bug exhausts."""
    rng = random.Random(f"{SEED}:pg-lock")
    env.migrate()
    exp = Expected(env.bucket)
    gate = env.tmp / "gate"
    # max in flight 10 = one receive's worth: while it holds messages the holder receives no more
    env.start_worker("holder", ICEFEED_FAULTS=f"after_write_start=hold:{gate}", ICEFEED_SQS_MAX_IN_FLIGHT="10")
    for i in range(4):
        exp.upload(env, f"events/pg/a{i:02}.json", rng.randint(1, 5))
    poll(lambda: (gate / "after_write_start.reached").exists(), 60, "the holder to hold the table lock")
    waiter = env.start_worker("waiter")
    for i in range(4):
        exp.upload(env, f"events/pg/b{i:02}.json", rng.randint(1, 5))
    writing = "SELECT id FROM batches WHERE status = 'WRITING'"
    poll(lambda: len(env.sql(writing)) >= 2, 30, "a second batch waiting for the table lock")
    killed = terminate_backends(env, [waiter.pid])
    (gate / "after_write_start.release").touch()
    assert killed >= 1, "no backend of the waiting worker was terminated"
    NOTES.append(f"PostgreSQL lock-wait fault: {killed} backend(s) of the lock-waiting worker terminated")
    finish(env, exp, "PG backends of a lock-waiting worker killed", timeout=90)
    assert stop_all(env) == [0, 0]


def _start(env: Env, logs: dict[int, Path], name: str, **extra: str) -> None:
    log = env.tmp / f"worker-{name}-{len(env.workers)}.log"  # the harness's naming
    logs[start(env, name, **extra).pid] = log


def _death(log: Path | None) -> str:
    """The worker's own last words (``icefeed: …`` on stderr), else its traceback's error and
    innermost product frames."""
    text = log.read_text(errors="replace") if log else ""
    said = [line for line in text.splitlines() if line.startswith("icefeed: ")]
    if said:
        return said[-1][:300]
    frames = re.findall(r'File "[^"]*/(worker/[^"]+)", line (\d+), in (\w+)', text)
    errors = re.findall(r"([\w.]+(?:Error|Exception)): (.*)", text)
    frames = [f for f in frames if f[2] not in ("_retry", "op", "<lambda>")]
    where = " <- ".join(f"{f}:{n} {fn}" for f, n, fn in reversed(frames[-3:]))
    if not errors:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["empty log"]
        return last[0][:200]
    return f"{errors[-1][0]}: {errors[-1][1][:120]} at {where}"


def _supervise(env: Env, logs: dict[int, Path], deaths: list[str]) -> None:
    """Replace a worker that died (as Kubernetes would), remembering how it died."""
    for proc in list(env.workers):
        code = proc.poll()
        if code is not None:
            deaths.append(f"exit {code}: {_death(logs.get(proc.pid))}")
            env.workers.remove(proc)
            assert len(deaths) <= MAX_DEATHS, "workers keep dying:\n" + "\n".join(deaths)
            _start(env, logs, f"replacement{len(deaths)}")


def test_pg_connections_terminated_while_loading(env: Env) -> None:
    """Every worker's PostgreSQL backends terminated every 0.5–1.5 s during a bulk load.

    The queue's maxReceiveCount is raised to 50 for this test only: the DLQ-budget loss is pinned
    down deterministically by test_pg_backends_of_a_lock_waiting_worker_terminated, and here it
    would hide whether connection loss ever duplicates or silently drops rows."""
    rng = random.Random(f"{SEED}:pg")
    env.migrate()
    dlq_arn = env.sqs.get_queue_attributes(QueueUrl=env.prov.dlq_url, AttributeNames=["QueueArn"])["Attributes"]
    env.sqs.set_queue_attributes(
        QueueUrl=env.prov.queue_url,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn["QueueArn"], "maxReceiveCount": 50})},
    )
    exp = Expected(env.bucket)
    logs: dict[int, Path] = {}
    for i in range(3):
        _start(env, logs, f"w{i}")
    deaths: list[str] = []
    killer = PgKiller(env, rng, low=0.5, high=1.5).start()
    started = time.monotonic()

    def progress(n: int) -> bool:
        _supervise(env, logs, deaths)
        return loaded_count(env) >= n

    try:
        for burst in range(4):
            for i in range(10):
                exp.upload(env, f"events/pg/b{burst}-{i:02}.json", rng.randint(1, 5))
            poll(lambda b=burst: progress(8 * (b + 1)), 60, f"burst {burst}: progress under PG kills", 0.25)
        poll(lambda: progress(len(exp.current)) or time.monotonic() > started + CHAOS_S, 60, "chaos phase", 0.25)
        loaded_under_chaos = loaded_count(env)
    finally:
        kills = killer.stop()
    _supervise(env, logs, deaths)
    NOTES.append(
        f"PostgreSQL chaos: {kills} icefeed backends terminated in {killer.rounds} rounds over "
        f"{time.monotonic() - started:.0f} s; {loaded_under_chaos}/{len(exp.current)} files loaded while it ran; "
        f"{len(deaths)} worker(s) died and were replaced"
    )
    NOTES.extend(f"  worker died under PG connection loss: {d}" for d in deaths)
    assert kills >= 5, f"only {kills} backends terminated: the chaos did not happen"
    finish(env, exp, "PG backends terminated every 0.5-1.5 s (3 workers)")
    assert set(stop_all(env)) == {0}


# -- scenario 5: SIGTERM during load --------------------------------------------------------------------


HOUR = "3600"


def test_sigterm_during_load_then_restart(env: Env) -> None:
    rng = random.Random(f"{SEED}:sigterm")
    env.migrate()
    exp = Expected(env.bucket)
    gate = env.tmp / "gate"
    # c holds its claimed batches past its 1 s grace: must release batches and messages. It starts
    # first and takes few messages (small batches, small window), so it surely holds a batch while
    # the others load the rest.
    # A visibility timeout of an hour: a message a worker fails to release stays invisible that
    # long, so "released" (visible within a retry's backoff) is told apart with a generous deadline
    # rather than a tight wall-clock bound.
    start(
        env,
        "c",
        ICEFEED_SHUTDOWN_GRACE_S="1",
        ICEFEED_FAULTS=f"after_claim=hold:{gate}",
        ICEFEED_BATCH_MAX_FILES="3",
        ICEFEED_SQS_MAX_IN_FLIGHT="10",
        ICEFEED_SQS_VISIBILITY_TIMEOUT_S=HOUR,
    )
    for i in range(60):
        exp.upload(env, f"events/term/f{i:02}.json", rng.randint(1, 5))
    poll(lambda: (gate / "after_claim.reached").exists(), 60, "worker c holding a claimed batch")
    start(env, "a", ICEFEED_SQS_VISIBILITY_TIMEOUT_S=HOUR)  # default grace (20 s): drains its in-flight batches
    start(env, "b", ICEFEED_SHUTDOWN_GRACE_S="2", ICEFEED_SQS_VISIBILITY_TIMEOUT_S=HOUR)
    poll(lambda: loaded_count(env) >= 10, 60, "a load under way")
    loaded_at_term = loaded_count(env)
    codes = stop_all(env)  # SIGTERM to all three at once
    assert codes == [0, 0, 0], f"workers exited {codes} on SIGTERM"
    # Nothing is left invisible past the grace: held messages were deleted or released at once;
    # at most a retry's backoff (BACKOFF_MAX_S, 8 s) — never the hour of the visibility timeout.
    started = time.monotonic()
    poll(lambda: not_visible(env) == 0, 15 * BACKOFF_MAX_S, "no message invisible after the workers exited", 0.1)
    invisible_s = time.monotonic() - started
    NOTES.append(
        f"SIGTERM: {loaded_at_term}/{len(exp.current)} files loaded at SIGTERM, all workers exited 0, "
        f"queue fully visible {invisible_s:.1f} s after the last exit"
    )
    assert loaded_at_term < len(exp.current), "the load finished before SIGTERM: nothing was in flight"
    for i in range(2):
        start(env, f"restart{i}")
    finish(env, exp, "SIGTERM during load (3 workers) + restart")
    assert stop_all(env) == [0, 0]
    statuses = Counter(b["status"] for b in env.sql("SELECT status FROM batches"))
    assert set(statuses) <= {"COMMITTED", "ABORTED"}, statuses


# -- scenario 6: a maintaining worker killed mid-compaction while others load ----------------------------

EAGER_MAINTENANCE = """
[maintenance]
check_interval_s = 2
min_snapshots_to_keep = 3
max_snapshot_age_s = 0
target_file_size_mb = 1
compact_min_files = 4
"""


@pytest.mark.parametrize("point", ["maintain_staged", "maintain_committed"])
def test_maintainer_killed_mid_compaction_while_loading(env: Env, point: str) -> None:
    rng = random.Random(f"{SEED}:maintain:{point}")
    env.migrate()
    exp = Expected(env.bucket)
    eager = env.tmp / "routes-eager.toml"
    eager.write_text(env.routes_file.read_text() + EAGER_MAINTENANCE)
    small_commits = {"ICEFEED_BATCH_MAX_FILES": "2"}
    for name in ("a", "b"):  # loaders: maintenance at its default interval (300 s) never comes round here
        start(env, name, **small_commits)
    for i in range(20):
        exp.upload(env, f"events/maint/w1-{i:02}.json", rng.randint(1, 5))
    poll(lambda: loaded_count(env) >= 8, 90, "small commits to compact")
    doomed = start(
        env,
        "m",
        **DOOMED,
        **small_commits,
        ICEFEED_ROUTES_FILE=str(eager),
        ICEFEED_FAULTS=f"{point}=exit",
        ICEFEED_LEASE_MAINTENANCE_TTL_S="10",
    )
    for i in range(20):  # appends go on while m maintains
        exp.upload(env, f"events/maint/w2-{i:02}.json", rng.randint(1, 5))
    assert wait_exit(doomed, 120, f"worker m to die at {point}") == 137
    env.workers.remove(doomed)
    # Another maintainer takes the table once m's lease lapses, while a third wave loads.
    start(env, "m2", **small_commits, ICEFEED_ROUTES_FILE=str(eager), ICEFEED_LEASE_MAINTENANCE_TTL_S="10")
    for i in range(20):
        exp.upload(env, f"events/maint/w3-{i:02}.json", rng.randint(1, 5))
    finish(env, exp, f"maintainer killed at {point} while 2 workers load")

    def compactions() -> list[dict[str, Any]]:
        lines = "\n".join(p.read_text(errors="replace") for p in env.tmp.glob("worker-m2-*.log")).splitlines()
        steps = [json.loads(line) for line in lines if '"maintenance_step"' in line]
        return [s for s in steps if s["step"] == "compact" and s["outcome"] == "done"]

    done = poll(compactions, 90, "the next maintainer to compact", interval=0.5)
    NOTES.append(f"{point}: worker m killed there; the next maintainer compacted {len(done)} group(s); table exact")
    assert set(stop_all(env)) == {0}
