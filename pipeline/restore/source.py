"""Where a run's rows come from: shards of SRC (or a list file / S3 Inventory read as a dataset), planned in a pool
of actors, so that restoring starts while the rest of the key space is still being listed."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.keys import UnsafeKeyError, check_key
from pipeline.listing import Shard, discover_shards, shard_of
from pipeline.manifest import Decision, RowStatus, shard_id
from pipeline.ray_tweaks import read_parquet
from pipeline.restore.config import RestoreConfig
from pipeline.restore.plan import PlanOptions, plan_shard
from pipeline.restore.resources import ActorPlan
from pipeline.restore.rows import work_table
from pipeline.storage import is_s3, location, resolve_file

__all__ = ["ListPlanner", "ShardPlanner", "planned_rows"]


class ShardPlanner:
    """Plans one shard per call (a block of one shard row); yields its blocks as they are ready."""

    def __init__(self, *, opts: PlanOptions) -> None:
        self.opts = opts

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for prefix, recursive in zip(batch["prefix"].to_pylist(), batch["recursive"].to_pylist(), strict=True):
            for rows in plan_shard(Shard(prefix, recursive), self.opts):
                yield work_table(rows)


class ListPlanner:
    """Plans a chunk of a list file or inventory: its keys grouped by shard, each group against that shard."""

    def __init__(self, *, opts: PlanOptions, depth: int, strip: str) -> None:
        self.opts, self.depth, self.strip = opts, depth, strip

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        keys, refused = _safe(_keys(batch, self.strip), self.opts, self.depth)
        if refused:
            yield work_table(refused)
        shards = [shard_of(k, self.depth) for k in keys["key"].to_pylist()]
        names = pa.array([f"{s.prefix}\0{int(s.recursive)}" for s in shards])
        for name in pc.unique(names).to_pylist():
            prefix, recursive = name.split("\0")
            wanted = keys.filter(pc.equal(names, name))
            for rows in plan_shard(Shard(prefix, recursive == "1"), self.opts, wanted):
                yield work_table(rows)


def _shard_id_of(key: str, depth: int) -> str:
    shard = shard_of(key, depth)
    return shard_id(shard.prefix, shard.recursive)


def _refusal(key: str) -> str | None:
    try:
        check_key(key)
    except UnsafeKeyError as e:
        return str(e)
    return None


def _safe(keys: pa.Table, opts: PlanOptions, depth: int) -> tuple[pa.Table, list[dict]]:
    """(the keys that stay below SRC and DST, failed rows for the others): a list names any path it likes."""
    src = location(opts.src, opts.s3)
    errors = [_refusal(key) for key in keys["key"].to_pylist()]
    refused = [
        {"key": key, "input": src.uri_of(key), "status": RowStatus.failed.value, "error": error, "count": 1}
        | {"decision": Decision.unsafe_key.value, "run_id": opts.run_id, "shard": _shard_id_of(key, depth)}
        for key, error in zip(keys["key"].to_pylist(), errors, strict=True)
        if error
    ]
    return keys.filter(pa.array([e is None for e in errors], pa.bool_())), refused


def _first_of_each(keys: pa.Table) -> pa.Table:
    """The rows of ``keys`` whose key is the first of its name: a key listed twice is planned (and restored) once."""
    if len(keys) == pc.count_distinct(keys["key"]).as_py():
        return keys
    return keys.take(pc.index_in(pc.unique(keys["key"]), keys["key"]))


def _keys(batch: pa.Table, strip: str) -> pa.Table:
    """(key[, size, mtime_ns]) from a chunk of text lines or of an inventory's rows, blank and comment lines and
    repeats out."""
    if "text" in batch.column_names:
        lines = pc.utf8_trim_whitespace(batch["text"])
        keep = pc.and_(pc.greater(pc.utf8_length(lines), 0), pc.invert(pc.starts_with(lines, "#")))
        return _first_of_each(pa.table({"key": lines.filter(keep)}))
    keys = batch["key"]
    if strip:  # an inventory names whole object keys: keep those below SRC, relative to it
        below = pc.starts_with(keys, strip)
        batch, keys = batch.filter(below), pc.utf8_slice_codeunits(keys.filter(below), len(strip))
    columns = {"key": keys}
    if "size" in batch.column_names and "last_modified_date" in batch.column_names:
        columns["size"] = batch["size"].cast(pa.int64())
        columns["mtime_ns"] = batch["last_modified_date"].cast(pa.timestamp("ns", "UTC")).cast(pa.int64())
    return _first_of_each(pa.table(columns))


def _list_dataset(cfg: RestoreConfig, cpus: float):
    import ray

    where, name = resolve_file(cfg.list_file, cfg.s3) if is_s3(cfg.list_file) else (None, cfg.list_file)
    path = where.path(name) if where else name
    fs = where.fs if where else None
    if posixpath.splitext(name)[1].lower() == ".parquet":
        ds = read_parquet(path, filesystem=fs, num_cpus=cpus)
        return ds, ("bucket" in ds.schema().names)
    return ray.data.read_text(path, filesystem=fs, num_cpus=cpus), False


def planned_rows(cfg: RestoreConfig, opts: PlanOptions, actors: ActorPlan):
    """The lazy dataset of planned rows: to restore (pending), settled rows to record, and tallies."""
    import ray

    # A dry run only plans: its planners may take the CPUs that would otherwise read, restore and write.
    planners = actors.io_workers if not cfg.dry_run else max(actors.io_workers, int(1 / actors.io_cpus))
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, planners))
    if cfg.list_file is None:
        shards = [s.as_row() for s in discover_shards(location(cfg.src, cfg.s3), cfg.shard_depth)]
        if not shards:
            shards = [Shard("", recursive=False).as_row()]  # an empty or missing SRC: a run with nothing to do
        source = ray.data.from_items(shards, override_num_blocks=len(shards))
        udf, kwargs = ShardPlanner, {"opts": opts}
    else:
        source, inventory = _list_dataset(cfg, actors.io_cpus)
        prefix = location(cfg.src, cfg.s3).root.partition("/")[2]
        strip = prefix.rstrip("/") + "/" if inventory and prefix else ""
        udf, kwargs = ListPlanner, {"opts": opts, "depth": cfg.shard_depth, "strip": strip}
    return source.map_batches(
        udf,
        batch_format="pyarrow",
        batch_size=1 if cfg.list_file is None else 10_000,
        compute=pool,
        num_cpus=actors.io_cpus,
        fn_constructor_kwargs=kwargs,
    )
