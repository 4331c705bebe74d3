"""The rows that travel through a restore: the state's columns plus the work columns the stages fill.

Images travel as raw uint8 bytes plus width/height/channels columns (not tensor extension types), so gray, RGB, any
size and any failure mix freely in one block. Planning also sends one *tally* row per shard and outcome it settled
without sending the inputs on (``key`` null, ``count`` how many), so every count reaches the driver through the one
stream it already reads.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.manifest import SCHEMA

__all__ = ["WORK_SCHEMA", "pixels_of", "tally_row", "work_table"]

WORK_SCHEMA = pa.schema(
    [
        *[f.with_nullable(True) for f in SCHEMA],
        pa.field("shard", pa.string()),  # state folder of the row (pipeline.manifest.shard_id)
        pa.field("count", pa.int64()),  # 1, or the number of inputs a tally row stands for
        pa.field("node", pa.string()),  # Ray node that restored it
        pa.field("out_key", pa.string()),
        pa.field("out_format", pa.string()),
        pa.field("channels", pa.int8()),
        pa.field("pixels", pa.large_binary()),
        pa.field("alpha", pa.large_binary()),
        pa.field("icc", pa.large_binary()),
        pa.field("exif", pa.large_binary()),
    ]
)


def work_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA) if rows else WORK_SCHEMA.empty_table()


def tally_row(status: str | None, decision: str, count: int, run_id: str) -> dict:
    return {"status": status, "decision": decision, "count": count, "run_id": run_id}


def pixels_of(row: dict) -> np.ndarray:
    shape = (row["height"], row["width"]) + ((3,) if row["channels"] == 3 else ())
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(shape)
