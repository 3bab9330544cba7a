"""Unit tests for worker.domain.batching: per-table buffers, batch limits and readiness."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.batching import BatchBuffer, BatchLimits, FileWork, halves, newest_per_key, source_uri, upload_order

PROPERTY = settings(max_examples=300, deadline=None, database=None)


def fw(file_id: int, size: int = 10, key: str | None = None, bucket: str = "landing") -> FileWork:
    return FileWork(
        file_id=file_id,
        ingestion="orders",
        bucket=bucket,
        key=key if key is not None else f"in/{file_id}.json",
        etag=f"etag-{file_id}",
        size=size,
    )


def buffer(max_files: int = 3, max_bytes: int = 1000, max_wait_s: float = 5.0) -> BatchBuffer:
    return BatchBuffer(BatchLimits(max_files=max_files, max_bytes=max_bytes, max_wait_s=max_wait_s))


def ids(files: list[FileWork]) -> list[int]:
    return [f.file_id for f in files]


# --------------------------------------------------------------------------- FileWork


def test_source_file_is_the_decoded_s3_uri() -> None:
    work = FileWork(1, "orders", "landing", "in/a b+c%2F€.json", "e", 1, datetime(2026, 1, 1, tzinfo=UTC))
    assert work.source_file == "s3://landing/in/a b+c%2F€.json"
    assert source_uri("b", "k/x") == "s3://b/k/x"


# --------------------------------------------------------------------------- readiness


def test_empty_buffer_is_never_ready() -> None:
    buf = buffer()
    assert len(buf) == 0
    assert not buf.ready(0.0)
    assert not buf.ready(1e9)
    assert buf.deadline() is None
    assert buf.take(0.0) == []


def test_ready_by_max_files() -> None:
    buf = buffer(max_files=3, max_wait_s=60)
    buf.add(fw(1), now=100.0)
    buf.add(fw(2), now=100.0)
    assert not buf.full()
    assert not buf.ready(100.0)
    buf.add(fw(3), now=100.0)
    assert buf.full()
    assert buf.ready(100.0)


def test_ready_by_max_bytes() -> None:
    buf = buffer(max_files=100, max_bytes=100, max_wait_s=60)
    buf.add(fw(1, size=60), now=0.0)
    assert not buf.ready(0.0)
    buf.add(fw(2, size=39), now=0.0)
    assert not buf.ready(0.0)
    buf.add(fw(3, size=1), now=0.0)  # exactly max_bytes
    assert buf.full()
    assert buf.ready(0.0)


def test_ready_by_max_wait() -> None:
    buf = buffer(max_files=100, max_wait_s=5.0)
    buf.add(fw(1), now=10.0)
    buf.add(fw(2), now=14.0)  # the oldest file sets the clock
    assert buf.deadline() == 15.0
    assert not buf.ready(14.999)
    assert buf.ready(15.0)
    assert buf.ready(100.0)


def test_zero_wait_is_ready_at_once() -> None:
    buf = buffer(max_files=100, max_wait_s=0.0)
    buf.add(fw(1), now=7.0)
    assert buf.ready(7.0)


# --------------------------------------------------------------------------- take


def test_take_respects_max_files_and_order() -> None:
    buf = buffer(max_files=3, max_wait_s=1.0)
    for i in [5, 1, 9, 3, 7]:
        buf.add(fw(i), now=0.0)
    assert ids(buf.take(1.0)) == [5, 1, 9]
    assert ids(buf.take(2.0)) == [3, 7]
    assert len(buf) == 0


def test_take_respects_max_bytes() -> None:
    buf = buffer(max_files=100, max_bytes=100)
    buf.add(fw(1, size=40), now=0.0)
    buf.add(fw(2, size=50), now=0.0)
    buf.add(fw(3, size=20), now=0.0)  # 110 > 100: next batch
    buf.add(fw(4, size=5), now=0.0)
    assert ids(buf.take(0.0)) == [1, 2]
    assert ids(buf.take(0.0)) == [3, 4]


def test_a_batch_may_fill_max_bytes_exactly() -> None:
    buf = buffer(max_files=100, max_bytes=100)
    for i, size in enumerate([60, 40, 1], start=1):
        buf.add(fw(i, size=size), now=0.0)
    assert ids(buf.take(0.0)) == [1, 2]  # 60 + 40 == max_bytes: the second file still fits
    assert ids(buf.take(0.0)) == [3]


def test_the_bytes_left_after_a_take_count_towards_the_next_batch_only() -> None:
    buf = buffer(max_files=100, max_bytes=100, max_wait_s=5.0)
    for i, size in enumerate([40, 50, 20], start=1):
        buf.add(fw(i, size=size), now=0.0)
    assert ids(buf.take(1.0)) == [1, 2]
    buf.add(fw(4, size=15), now=1.0)  # 20 + 15 bytes wait: far from full
    assert not buf.full() and not buf.ready(1.0)


def test_take_stops_at_the_first_file_that_does_not_fit() -> None:
    """Oldest first: a small file behind a big one does not jump the queue."""
    buf = buffer(max_files=100, max_bytes=100)
    buf.add(fw(1, size=90), now=0.0)
    buf.add(fw(2, size=50), now=0.0)
    buf.add(fw(3, size=5), now=0.0)
    assert ids(buf.take(0.0)) == [1]
    assert ids(buf.take(0.0)) == [2, 3]


def test_oversized_file_alone_forms_a_batch() -> None:
    buf = buffer(max_files=10, max_bytes=100)
    buf.add(fw(1, size=5000), now=0.0)
    buf.add(fw(2, size=1), now=0.0)
    assert buf.ready(0.0)
    assert ids(buf.take(0.0)) == [1]
    assert ids(buf.take(0.0)) == [2]


def test_oversized_file_behind_others_waits_its_turn() -> None:
    buf = buffer(max_files=10, max_bytes=100)
    buf.add(fw(1, size=10), now=0.0)
    buf.add(fw(2, size=5000), now=0.0)
    assert ids(buf.take(0.0)) == [1]
    assert ids(buf.take(0.0)) == [2]


def test_bytes_are_accounted_after_take() -> None:
    buf = buffer(max_files=2, max_bytes=100, max_wait_s=60)
    buf.add(fw(1, size=30), now=0.0)
    buf.add(fw(2, size=30), now=0.0)
    buf.add(fw(3, size=30), now=0.0)
    buf.take(0.0)
    assert len(buf) == 1
    assert not buf.full()  # 30 bytes and 1 file left
    buf.add(fw(4, size=70), now=0.0)
    assert buf.full()  # 100 bytes


def test_duplicate_file_ids_are_merged() -> None:
    buf = buffer(max_files=2, max_bytes=100, max_wait_s=60)
    buf.add(fw(1, size=60), now=0.0)
    buf.add(fw(1, size=60), now=1.0)
    assert len(buf) == 1
    assert not buf.full()  # the bytes were not counted twice
    assert ids(buf.take(0.0)) == [1]
    assert buf.take(0.0) == []


def test_two_versions_of_one_key_never_share_a_batch() -> None:
    buf = buffer(max_files=10, max_wait_s=60)
    buf.add(fw(1, key="in/a.json"), now=0.0)
    buf.add(fw(2, key="in/a.json"), now=0.0)  # a newer version: same bucket/key, new file id
    buf.add(fw(3, key="in/b.json"), now=0.0)
    first = buf.take(1.0)
    assert ids(first) == [1, 3]
    assert len({f.source_file for f in first}) == len(first)
    assert len(buf) == 1
    assert ids(buf.take(2.0)) == [2]


def test_same_key_in_two_buckets_may_share_a_batch() -> None:
    buf = buffer(max_files=10)
    buf.add(fw(1, key="in/a.json", bucket="b1"), now=0.0)
    buf.add(fw(2, key="in/a.json", bucket="b2"), now=0.0)
    assert ids(buf.take(0.0)) == [1, 2]


def test_three_versions_take_three_batches() -> None:
    buf = buffer(max_files=10)
    for i in (1, 2, 3):
        buf.add(fw(i, key="same.json"), now=0.0)
    assert [ids(buf.take(0.0)) for _ in range(3)] == [[1], [2], [3]]
    assert len(buf) == 0


def test_deadline_resets_after_take() -> None:
    buf = buffer(max_files=2, max_wait_s=5.0)
    for i in (1, 2, 3):
        buf.add(fw(i), now=0.0)
    assert buf.deadline() == 5.0
    buf.take(now=3.0)
    assert len(buf) == 1
    assert buf.deadline() == 8.0  # the leftovers wait from the take
    assert not buf.ready(7.9)
    assert buf.ready(8.0)


def test_deadline_cleared_when_emptied() -> None:
    buf = buffer(max_files=5, max_wait_s=5.0)
    buf.add(fw(1), now=0.0)
    buf.take(now=1.0)
    assert buf.deadline() is None
    buf.add(fw(2), now=50.0)
    assert buf.deadline() == 55.0


def test_drain() -> None:
    buf = buffer(max_files=2, max_bytes=100, max_wait_s=5.0)
    for i in (1, 2, 3):
        buf.add(fw(i, size=40), now=0.0)
    buf.add(fw(4, key="in/1.json"), now=0.0)  # drain returns both versions
    assert ids(buf.drain()) == [1, 2, 3, 4]
    assert len(buf) == 0
    assert buf.deadline() is None
    assert not buf.full()
    assert not buf.ready(100.0)
    # the byte count restarted at zero
    buf.add(fw(5, size=99), now=200.0)
    assert not buf.full()


@pytest.mark.parametrize(
    ("n", "left", "right"),
    [(0, 0, 0), (1, 0, 1), (2, 1, 1), (3, 1, 2), (10, 5, 5), (11, 5, 6)],
)
def test_halves(n: int, left: int, right: int) -> None:
    files = [fw(i) for i in range(n)]
    a, b = halves(files)
    assert (len(a), len(b)) == (left, right)
    assert a + b == files


# --------------------------------------------------------------------------- properties

_files = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=40),  # file id (repeats are duplicate events)
        st.integers(min_value=0, max_value=300),  # size
        st.sampled_from(["a", "b", "c", "d", "e"]),  # key (repeats are versions)
    ),
    max_size=60,
)


@PROPERTY
@given(
    files=_files,
    max_files=st.integers(min_value=1, max_value=8),
    max_bytes=st.integers(min_value=1, max_value=600),
)
def test_taking_until_empty_returns_every_file_once(
    files: list[tuple[int, int, str]], max_files: int, max_bytes: int
) -> None:
    buf = buffer(max_files=max_files, max_bytes=max_bytes, max_wait_s=1.0)
    added: dict[int, FileWork] = {}
    for file_id, size, key in files:
        work = fw(file_id, size=size, key=key)
        buf.add(work, now=0.0)
        added.setdefault(file_id, work)
    assert len(buf) == len(added)

    taken: list[FileWork] = []
    now = 0.0
    for _ in range(len(added) + 1):
        if not len(buf):
            break
        now += 1.0
        assert buf.ready(now)
        batch = buf.take(now)
        assert batch, "take on a non-empty buffer must make progress"
        assert len(batch) <= max_files
        if len(batch) > 1:
            assert sum(f.size for f in batch) <= max_bytes
        assert len({f.source_file for f in batch}) == len(batch)
        taken += batch
    assert len(buf) == 0
    assert buf.deadline() is None
    counts = Counter(f.file_id for f in taken)
    assert set(counts) == set(added)
    assert max(counts.values(), default=1) == 1
    # each kept entry is the first one added for its id
    assert all(f is added[f.file_id] for f in taken)
    # versions of one key are taken in the order they arrived
    for key in {f.key for f in taken}:
        order_taken = [f.file_id for f in taken if f.key == key]
        order_added = [fid for fid in added if added[fid].key == key]
        assert order_taken == order_added


def test_a_batch_is_decided_in_upload_order_not_arrival_order() -> None:
    from datetime import UTC, datetime, timedelta

    from worker.domain.batching import FileWork, upload_order

    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    late = FileWork(1, "e", "b", "m3.json", "x", 1, t0 + timedelta(milliseconds=30))
    early = FileWork(2, "e", "b", "m1.json", "x", 1, t0)
    unknown = FileWork(0, "e", "b", "m0.json", "x", 1, None)
    same_a = FileWork(4, "e", "b", "a.json", "x", 1, t0 + timedelta(milliseconds=10))
    same_b = FileWork(3, "e", "b", "b.json", "x", 1, t0 + timedelta(milliseconds=10))
    ordered = sorted([late, unknown, same_a, early, same_b], key=upload_order)
    assert [f.key for f in ordered] == ["m1.json", "b.json", "a.json", "m3.json", "m0.json"]


def test_of_the_versions_of_a_key_offered_together_the_newest_upload_goes_first() -> None:
    def version(file_id: int, second: int | None, key: str = "in/k.json") -> FileWork:
        at = None if second is None else datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
        return FileWork(file_id, "orders", "landing", key, f"e{file_id}", 10, at)

    old, new, other = version(1, 5), version(2, 9), version(3, 1, key="in/other.json")
    assert newest_per_key([new, other, old]) == ([new, other], [old])
    assert newest_per_key([old, other, new]) == ([other, new], [old])  # arrival order kept
    # Same upload time: the later registration wins; no event time at all: taken as the newest.
    tie = version(4, 9)
    assert newest_per_key([tie, new]) == ([tie], [new])
    unknown = version(5, None)
    assert newest_per_key([unknown, new]) == ([unknown], [new])
    assert upload_order(unknown) == (float("inf"), 5)
