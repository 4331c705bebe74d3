"""Restore state per shard: parts overlay the current file in order, compaction folds them in, bad files are skipped."""

from __future__ import annotations

import pyarrow as pa

from pipeline.manifest import (
    SCHEMA,
    STATE_DIR,
    compact_shard,
    new_run_id,
    read_shard_state,
    read_state,
    shard_id,
    write_shard_part,
)
from pipeline.storage import list_files, resolve, write_bytes_atomic


def _rows(run_id: str, keys: list[str], status: str = "ok", qf: int | None = 20) -> pa.Table:
    n = len(keys)
    values = {"key": keys, "input": keys, "status": [status] * n, "qf": [qf] * n, "run_id": [run_id] * n}
    return pa.table({name: values.get(name, [None] * n) for name in SCHEMA.names}, schema=SCHEMA)


def test_parts_overlay_in_run_order_then_compact(tmp_path):
    dst = resolve(str(tmp_path / "out"))
    killed, later = new_run_id(), new_run_id()
    assert killed < later  # run ids sort by start time
    shard, other = shard_id("photos", True), shard_id("", False)
    assert shard != other and len(shard) == 20
    write_shard_part(dst, shard, killed, _rows(killed, ["a", "b"], status="failed"))
    write_shard_part(dst, shard, later, _rows(later, ["b", "c"]))
    write_shard_part(dst, other, later, _rows(later, ["top"]))
    write_bytes_atomic(dst.fs, dst.path(f"{STATE_DIR}/{shard}/part-zzz-broken.parquet"), b"not parquet")

    state, files = read_shard_state(dst, shard)
    assert len(files) == 3  # two parts and the unreadable one, which is ignored
    assert {r["key"]: (r["status"], r["run_id"]) for r in state.to_pylist()} == {
        "a": ("failed", killed),
        "b": ("ok", later),  # the later run's row wins
        "c": ("ok", later),
    }
    assert compact_shard(dst, shard) == 3
    assert sorted(list_files(dst.child(f"{STATE_DIR}/{shard}"))) == ["current.parquet"]
    assert read_shard_state(dst, shard)[0].to_pylist() == state.sort_by("key").to_pylist()
    assert sorted(read_state(dst)["key"].to_pylist()) == ["a", "b", "c", "top"]
    assert compact_shard(dst, other) == 1 and compact_shard(dst, shard_id("nothing", True)) == 0
