"""Manifest storage: parts of a killed run are kept and compacted, a finished run leaves one file, latest row wins."""

from __future__ import annotations

import pyarrow as pa

from pipeline.manifest import (
    MANIFEST_DIR,
    SCHEMA,
    RunWriter,
    compact,
    latest_rows,
    new_run_id,
    read_manifest,
    write_part,
)
from pipeline.storage import list_files, resolve


def _rows(run_id: str, inputs: list[str], status: str = "ok", qf: int | None = 20) -> pa.Table:
    n = len(inputs)
    values = {"input": inputs, "status": [status] * n, "qf": [qf] * n, "run_id": [run_id] * n}
    return pa.table({name: values.get(name, [None] * n) for name in SCHEMA.names}, schema=SCHEMA)


def test_killed_run_parts_are_kept_then_compacted(tmp_path):
    dst = resolve(str(tmp_path / "out"))
    killed, finished = new_run_id(), new_run_id()
    assert killed < finished  # run ids sort by start time
    write_part(dst, killed, _rows(killed, ["a", "b"]))
    write_part(dst, killed, _rows(killed, ["c"], status="failed", qf=None))
    assert read_manifest(dst).num_rows == 3  # readable before any compaction

    # The next run, as run_restore does it: compact leftovers first, then stream its own rows.
    assert compact(dst) == [killed]
    writer = RunWriter(dst, finished)
    part = _rows(finished, ["c", "d"], qf=50)
    write_part(dst, finished, part)
    writer.add(part)
    writer.close()
    files = list_files(dst.child(MANIFEST_DIR))
    assert sorted(files) == sorted([f"{killed}.parquet", f"{finished}.parquet"])
    table = read_manifest(dst)
    assert table.num_rows == 5
    latest = latest_rows(table)
    assert latest["c"]["status"] == "ok" and latest["c"]["qf"] == 50 and latest["a"]["qf"] == 20


def test_aborted_run_leaves_its_parts(tmp_path):
    dst = resolve(str(tmp_path / "out"))
    run = new_run_id()
    writer = RunWriter(dst, run)
    write_part(dst, run, _rows(run, ["x"]))
    writer.abort()
    assert [f.split("/")[0] for f in list_files(dst.child(MANIFEST_DIR))] == ["runs"]
    assert compact(dst) == [run] and read_manifest(dst).column("input").to_pylist() == ["x"]
