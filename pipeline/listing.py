"""The key space in shards: found by the driver from a few directory levels, listed one shard per task.

A shard is a directory (an S3 prefix one or more delimiter levels down): at the levels above ``depth`` it holds only
the files directly in it; at ``depth`` it holds its whole subtree. :func:`shard_of` gives any key's shard from the
key alone, so a list file or an S3 Inventory report, read as a dataset, lands on the same shards (and the same state)
as a listing does. The driver lists only the levels above ``depth`` (O(shards) names); the files of each shard are
listed inside the Ray task that plans it (one streaming listing, ~1000 keys per S3 request).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.keys import UnsafeKeyError, check_key
from pipeline.storage import ListingProblem, Location, iter_listing

log = logging.getLogger(__name__)

__all__ = ["ENTRY_SCHEMA", "Shard", "discover_shards", "list_shard", "shard_of"]

ENTRY_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # path relative to the root
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Shard:
    """``prefix`` (relative to the root, "" for the root itself) and whether it holds its whole subtree."""

    prefix: str
    recursive: bool

    def as_row(self) -> dict:
        return {"prefix": self.prefix, "recursive": self.recursive}


def shard_of(key: str, depth: int) -> Shard:
    """The shard holding ``key`` when shards are cut ``depth`` directory levels down."""
    folders = key.split("/")[:-1]
    if len(folders) >= depth:
        return Shard("/".join(folders[:depth]), recursive=True)
    return Shard("/".join(folders), recursive=False)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def discover_shards(location: Location, depth: int, skip: tuple[str, ...] = ()) -> Iterator[Shard]:
    """Every shard below the root, from non-recursive listings of the levels above ``depth``.

    ``skip``: top-level names that are not part of the key space (a destination's own folders).
    """
    if depth == 0:
        yield Shard("", recursive=True)
        return
    frontier = [""]
    for level in range(depth):
        below = []
        for prefix in frontier:
            selector = pafs.FileSelector(location.path(prefix) if prefix else location.root, allow_not_found=True)
            infos = location.fs.get_file_info(selector)
            if any(i.type == pafs.FileType.File for i in infos):
                yield Shard(prefix, recursive=False)
            for info in infos:
                name = posixpath.basename(info.path.rstrip("/"))
                if info.type != pafs.FileType.Directory or (level == 0 and name in skip):
                    continue
                try:
                    below.append(check_key(_join(prefix, name)))
                except UnsafeKeyError as e:  # an S3 prefix such as "..": listing it would list outside the root
                    log.warning("not listed: %s", e)
        frontier = sorted(below)
    for prefix in frontier:
        yield Shard(prefix, recursive=True)


def list_shard(
    location: Location, shard: Shard, skip: tuple[str, ...] = (), follow_symlinks: bool = False
) -> tuple[pa.Table, list[ListingProblem]]:
    """((key, size, mtime_ns) of every file in ``shard``, sorted by key; the entries that are no readable file: links
    not followed, dangling or looping). ``skip`` as for :func:`discover_shards`."""
    where = location.child(shard.prefix) if shard.prefix else location
    base = f"{shard.prefix}/" if shard.prefix else ""
    keys, sizes, mtimes, problems = [], [], [], []
    for entry in iter_listing(where, recursive=shard.recursive, follow_symlinks=follow_symlinks):
        key = base + entry.path
        if skip and key.split("/", 1)[0] in skip:
            continue
        if isinstance(entry, ListingProblem):
            problems.append(ListingProblem(key, entry.error))
            continue
        keys.append(key)
        sizes.append(entry.size)
        mtimes.append(entry.mtime_ns)
    table = pa.table({"key": keys, "size": sizes, "mtime_ns": mtimes}, schema=ENTRY_SCHEMA).sort_by("key")
    return table, problems
