"""Planning, one shard per Ray task: list the shard in SRC and in DST, read its state, send on only what needs work.

For every input of the shard (in the order below; the first that applies)::

    not an image extension            -> counted (not_image)
    key that could leave SRC or DST   -> failed (unsafe_key)        two inputs, one output name -> failed (name_clash)
    zero bytes                        -> failed (empty)             --overwrite                 -> to restore
    no state row                      -> output newer than the input: recorded as done (adopted); else to restore (new)
    size or mtime differ from state   -> to restore (changed)
    restored before                   -> output present: counted (done); else to restore (output_missing)
    skipped for its QF before         -> still outside the range: counted (qf_range), unread; else to restore (qf_again)
    failed before                     -> to restore (retry)

Counted inputs are not sent on; one tally row per outcome carries their number. "Adopted" covers the outputs a
killed run wrote in its last blocks before their state rows were stored: they are not redone.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.codec import OutputFormat, output_format
from pipeline.keys import UnsafeKeyError, key_paths
from pipeline.listing import ENTRY_SCHEMA, Shard, list_shard
from pipeline.manifest import MANIFEST_DIR, Decision, RowStatus, read_shard_state, replace_shard_state, shard_id
from pipeline.report.store import REPORTS_DIR
from pipeline.storage import Location, S3Settings, location

__all__ = ["DST_FOLDERS", "PlanOptions", "plan_shard", "qf_skip_reason"]

DST_FOLDERS = (MANIFEST_DIR, REPORTS_DIR)  # a destination's own folders: never outputs
_TALLY_REASONS = {Decision.done: "done: unchanged since restored", Decision.qf_range: "outside the QF range"}


@dataclass(frozen=True)
class PlanOptions:
    """What planning needs of the config (small and picklable: it travels to every planning task)."""

    src: str
    dst: str
    s3: S3Settings
    fmt: OutputFormat
    extensions: tuple[str, ...]
    overwrite: bool
    min_qf: int | None
    max_qf: int | None
    run_id: str
    dry_run: bool
    follow_symlinks: bool = False
    block_rows: int = 64


def qf_skip_reason(min_qf: int | None, max_qf: int | None, qf: int | None) -> str | None:
    """Why an input with estimated quality ``qf`` (None: not a JPEG) is outside the range, or None if inside."""
    if min_qf is None and max_qf is None:
        return None
    if qf is None:
        return "not a JPEG with quantization tables, and --min-qf/--max-qf select by JPEG quality"
    if min_qf is not None and qf < min_qf:
        return f"estimated QF {qf} is below --min-qf {min_qf}"
    if max_qf is not None and qf > max_qf:
        return f"estimated QF {qf} is above --max-qf {max_qf}"
    return None


def _outputs(dst: Location, shard: Shard, dry_run: bool) -> dict[str, int | None]:
    """Output key -> mtime_ns of what the shard holds in DST; on a local disk also removes the hidden temporaries a
    killed run left (S3 writes leave none)."""
    listed, _ = list_shard(dst, shard, skip=DST_FOLDERS if not shard.prefix else ())
    found = {}
    for key, mtime in zip(listed["key"].to_pylist(), listed["mtime_ns"].to_pylist(), strict=True):
        base = posixpath.basename(key)
        if base.startswith(".") and base.endswith(".tmp"):
            if not dry_run and dst.fs.type_name == "local":
                dst.fs.delete_file(dst.path(key))
            continue
        found[key] = mtime
    return found


def _state_rows(state: pa.Table) -> dict[str, dict]:
    columns = ("size", "mtime_ns", "status", "qf")
    values = [state[c].to_pylist() for c in columns]
    return {k: dict(zip(columns, v, strict=True)) for k, *v in zip(state["key"].to_pylist(), *values, strict=True)}


def _decide(opts: PlanOptions, size: int, mtime: int | None, before: dict | None, output_mtime) -> Decision:
    """The decision for one safe, non-empty input (see the module docstring)."""
    if opts.overwrite:
        return Decision.overwrite
    if before is None:
        adopt = output_mtime is not None and mtime is not None and output_mtime >= mtime
        return Decision.adopted if adopt else Decision.new
    if (before["size"], before["mtime_ns"]) != (size, mtime):
        return Decision.changed
    if before["status"] == RowStatus.ok.value:
        return Decision.done if output_mtime is not None else Decision.output_missing
    if before["status"] == RowStatus.skipped.value:
        return Decision.qf_range if qf_skip_reason(opts.min_qf, opts.max_qf, before["qf"]) else Decision.qf_again
    return Decision.retry


def _row(opts: PlanOptions, src: Location, dst: Location, key: str, size: int, mtime: int | None) -> dict:
    return {
        "key": key,
        "input": src.uri_of(key),
        "size": size,
        "mtime_ns": mtime,
        "count": 1,
        "run_id": opts.run_id,
        "milliseconds": 0.0,
    }


def _entries(src: Location, shard: Shard, wanted: pa.Table | None, follow: bool) -> tuple[pa.Table, list, list[str]]:
    """(key, size, mtime_ns) of the shard's inputs, the entries that are no readable file, and the wanted keys SRC
    does not have."""
    if wanted is not None and "size" in wanted.column_names:
        return wanted.select(ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA), [], []  # an inventory: sizes and times given
    listed, problems = list_shard(src, shard, follow_symlinks=follow)
    if wanted is None:
        return listed, problems, []
    problems = [p for p in problems if p.path in set(wanted["key"].to_pylist())]
    present = listed.filter(pc.is_in(listed["key"], wanted["key"]))
    named = pa.array([p.path for p in problems], pa.string())
    gone = pc.invert(pc.or_(pc.is_in(wanted["key"], present["key"]), pc.is_in(wanted["key"], named)))
    return present, problems, pc.filter(wanted["key"], gone).to_pylist()


def plan_shard(shard: Shard, opts: PlanOptions, wanted: pa.Table | None = None) -> Iterator[list[dict]]:
    """Blocks of rows to send on for one shard, then its tally rows. ``wanted``: only these keys (a list file or
    inventory), with ``size``/``mtime_ns`` when the list has them; else the whole shard, whose state is then also
    compacted (inputs gone from SRC leave it)."""
    src, dst = location(opts.src, opts.s3), location(opts.dst, opts.s3)
    sid = shard_id(shard.prefix, shard.recursive)
    entries, problems, missing = _entries(src, shard, wanted, opts.follow_symlinks)
    outputs = _outputs(dst, shard, opts.dry_run)
    state, files = read_shard_state(dst, sid)
    known = _state_rows(state)
    tally: Counter = Counter()
    block: list[dict] = []
    claimed: dict[str, str] = {}
    failed = [(key, Decision.not_found, "named by the list file but not found in SRC") for key in missing]
    for key, decision, error in failed + [(p.path, Decision.bad_entry, p.error) for p in problems]:
        row = _row(opts, src, dst, key, None, None)
        block.append(
            {**row, "shard": sid, "decision": decision.value, "status": RowStatus.failed.value, "error": error}
        )
    for key, size, mtime in zip(*(entries[c].to_pylist() for c in ENTRY_SCHEMA.names), strict=True):
        if posixpath.splitext(key)[1].lower() not in opts.extensions:
            tally[(None, Decision.not_image)] += 1
            continue
        row = _row(opts, src, dst, key, size, mtime)
        decision, row = _plan_one(opts, src, dst, row, known.get(key), outputs, claimed)
        if decision in (Decision.done, Decision.qf_range):
            tally[(RowStatus.skipped, decision)] += 1
            continue
        block.append({**row, "shard": sid, "decision": decision.value})
        if len(block) >= opts.block_rows:
            yield block
            block = []
    block += [
        {"status": s.value if s else None, "decision": d.value, "reason": _TALLY_REASONS.get(d), "count": n}
        | {"run_id": opts.run_id}
        for (s, d), n in sorted(tally.items(), key=str)
    ]
    yield block
    if wanted is None and not opts.dry_run and (len(files) > 1 or len(known) > len(entries)):
        replace_shard_state(dst, sid, state.filter(pc.is_in(state["key"], entries["key"])), files)


def _plan_one(opts, src, dst, row, before, outputs, claimed) -> tuple[Decision, dict]:
    key = row["key"]
    try:
        out = key_paths(key, src, dst, opts.fmt).out_key
    except UnsafeKeyError as e:
        return Decision.unsafe_key, {**row, "status": RowStatus.failed.value, "error": str(e)}
    if out.split("/")[0] in DST_FOLDERS:  # e.g. SRC is an earlier DST: its reports would overwrite this run's
        error = f"refused key {key!r}: its output would land in DST/{out.split('/')[0]}/, dagn's own folder"
        return Decision.unsafe_key, {**row, "status": RowStatus.failed.value, "error": error}
    if out in claimed:
        error = f"output name {out} is also the output of {claimed[out]}; rename one"
        return Decision.name_clash, {**row, "status": RowStatus.failed.value, "error": error}
    claimed[out] = key
    row.update(out_key=out, out_format=output_format(key, opts.fmt), output=dst.uri_of(out))
    if row["size"] == 0:
        return Decision.empty, {
            **row,
            "status": RowStatus.failed.value,
            "error": "empty file (0 bytes)",
            "output": None,
        }
    decision = _decide(opts, row["size"], row["mtime_ns"], before, outputs.get(out))
    status = RowStatus.ok if decision == Decision.adopted else RowStatus.pending
    return decision, {**row, "status": status.value}
