"""The scheduled cleaning job: scan an archive shard by shard, estimate each JPEG's quality from its first bytes,
restore the badly compressed through the restore pipeline, report. Modules: :mod:`~pipeline.clean.config`,
:mod:`~pipeline.clean.scan` (per shard), :mod:`~pipeline.clean.report`, :mod:`~pipeline.clean.run` (the recipe)."""

from pipeline.clean.config import CleanConfig
from pipeline.clean.report import histogram
from pipeline.clean.run import CleanResult, run_clean
from pipeline.clean.scan import SCAN_SCHEMA, probe

__all__ = [
    "SCAN_SCHEMA",
    "CleanConfig",
    "CleanResult",
    "histogram",
    "probe",
    "run_clean",
]
