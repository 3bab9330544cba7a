"""Table maintenance decisions (pure): which snapshots expire, which small files are compacted
together, which files are orphans, and when a table is due.

Nothing here touches a table: the adapter reads the table's state, these functions decide, the
adapter applies the decision under the table's commit lock (docs/table-maintenance.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MB = 1024 * 1024

#: A data file below this fraction of the target size is "small" (Iceberg's rewrite_data_files
#: uses the same 75 % for its min-file-size-bytes default).
SMALL_FRACTION = 0.75


@dataclass(frozen=True)
class MaintenancePolicy:
    """One table's maintenance settings (the routes file's ``[maintenance]`` block)."""

    enabled: bool = True
    check_interval_s: int = 300
    min_snapshots_to_keep: int = 10
    max_snapshot_age_s: int = 3600
    target_file_size_mb: int = 512
    compact_min_files: int = 50
    orphan_min_age_s: int = 3 * 86400
    orphan_interval_s: int = 86400
    metadata_previous_versions: int = 20
    max_lock_wait_s: float = 5.0

    @property
    def target_bytes(self) -> int:
        return self.target_file_size_mb * MB

    @property
    def small_bytes(self) -> int:
        return int(self.target_bytes * SMALL_FRACTION)

    def table_properties(self) -> dict[str, str]:
        """Iceberg table properties that bound old metadata.json files: honoured by every commit of
        an engine that implements them (Apache Spark, pyiceberg), and by icefeed's own commits."""
        return {
            "write.metadata.delete-after-commit.enabled": "true",
            "write.metadata.previous-versions-max": str(self.metadata_previous_versions),
        }


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    timestamp_ms: int


@dataclass(frozen=True)
class DataFile:
    path: str
    size_bytes: int
    records: int


@dataclass(frozen=True)
class StoredFile:
    """An object under the table's location, as listed."""

    path: str
    size_bytes: int
    modified_ms: int


@dataclass(frozen=True)
class TableStats:
    snapshots: int
    data_files: int
    small_files: int
    data_bytes: int
    records: int
    manifests: int
    metadata_bytes: int

    def as_dict(self) -> dict[str, int]:
        return {
            "snapshots": self.snapshots,
            "data_files": self.data_files,
            "small_files": self.small_files,
            "data_bytes": self.data_bytes,
            "records": self.records,
            "manifests": self.manifests,
            "metadata_bytes": self.metadata_bytes,
        }


@dataclass(frozen=True)
class Plan:
    """What one maintenance run of a table would do."""

    expire: list[int] = field(default_factory=list)
    bins: list[list[DataFile]] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "expire_snapshots": len(self.expire),
            "compact_groups": [
                {"files": len(b), "bytes": sum(f.size_bytes for f in b), "records": sum(f.records for f in b)}
                for b in self.bins
            ],
            "set_properties": dict(self.properties),
        }


def stats(
    snapshots: int, files: Sequence[DataFile], manifests: int, metadata_bytes: int, policy: MaintenancePolicy
) -> TableStats:
    return TableStats(
        snapshots=snapshots,
        data_files=len(files),
        small_files=sum(1 for f in files if f.size_bytes < policy.small_bytes),
        data_bytes=sum(f.size_bytes for f in files),
        records=sum(f.records for f in files),
        manifests=manifests,
        metadata_bytes=metadata_bytes,
    )


def expirable(snapshots: Iterable[Snapshot], keep: Iterable[int], policy: MaintenancePolicy, now_ms: int) -> list[int]:
    """Snapshots to expire: older than ``max_snapshot_age_s``, never one of the newest
    ``min_snapshots_to_keep``, never one in ``keep`` (the current snapshot, branch and tag heads).

    Expiry only removes snapshots from the metadata; it deletes no file. A file that no snapshot
    references any more is deleted later by orphan removal, once it is older than its safety age."""
    keep = set(keep)
    ordered = sorted(snapshots, key=lambda s: (s.timestamp_ms, s.snapshot_id), reverse=True)
    cutoff = now_ms - policy.max_snapshot_age_s * 1000
    out = [
        s.snapshot_id
        for s in ordered[policy.min_snapshots_to_keep :]
        if s.timestamp_ms < cutoff and s.snapshot_id not in keep
    ]
    return sorted(out)


def compaction_bins(files: Iterable[DataFile], policy: MaintenancePolicy) -> list[list[DataFile]]:
    """Groups of small files, each written back as one file of at most the target size.

    Nothing is compacted until ``compact_min_files`` small files are live. Then groups are made
    from the smallest files up, size-tiered: a file joins a group only while it is no larger than
    the group so far, so an earlier compaction's output is rewritten only once as many bytes of
    newer small files have come to join it (each row is rewritten about log2(table / small file)
    times, not once per run). A group of one file is left alone: rewriting it would change nothing."""
    small = sorted((f for f in files if f.size_bytes < policy.small_bytes), key=lambda f: (f.size_bytes, f.path))
    if len(small) < policy.compact_min_files:
        return []
    bins: list[list[DataFile]] = []
    current: list[DataFile] = []
    size = 0
    for f in small:
        if current and (size + f.size_bytes > policy.target_bytes or (len(current) > 1 and f.size_bytes > size)):
            bins.append(current)
            if f.size_bytes > size and len(current) > 1:
                break  # every later file is at least this large: it waits for more small files
            current, size = [], 0
        current.append(f)
        size += f.size_bytes
    else:
        bins.append(current)
    return [b for b in bins if len(b) > 1]


def orphans(listed: Iterable[StoredFile], referenced: set[str], cutoff_ms: int) -> list[StoredFile]:
    """Files under the table's location that nothing references and that are older than the
    cut-off (now − ``orphan_min_age_s``). The age is what keeps an in-flight write's files safe:
    a write references its files only when it commits, and no write lives that long."""
    return sorted(
        (f for f in listed if f.modified_ms < cutoff_ms and _normal(f.path) not in referenced),
        key=lambda f: f.path,
    )


def normalized(paths: Iterable[str]) -> set[str]:
    return {_normal(p) for p in paths}


def _normal(path: str) -> str:
    """One spelling per object: s3a:// and s3n:// are s3://."""
    for scheme in ("s3a://", "s3n://"):
        if path.startswith(scheme):
            return "s3://" + path[len(scheme) :]
    return path


def plan(
    snapshots: Sequence[Snapshot],
    keep: Iterable[int],
    files: Sequence[DataFile],
    properties: dict[str, str],
    policy: MaintenancePolicy,
    now_ms: int,
) -> Plan:
    wanted = policy.table_properties()
    return Plan(
        expire=expirable(snapshots, keep, policy, now_ms),
        bins=compaction_bins(files, policy),
        properties={k: v for k, v in wanted.items() if properties.get(k) != v},
    )
