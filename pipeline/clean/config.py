"""What a cleaning run is asked to do."""

from __future__ import annotations

import posixpath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.extensions import JPEG_EXTENSIONS
from pipeline.lease import LeaseSeconds
from pipeline.report.store import REPORTS_DIR
from pipeline.storage import Extensions, S3Settings, inside

__all__ = ["CleanConfig"]

_SET_BY_CLEAN = {
    *("src", "dst", "list_file", "max_qf", "min_qf", "s3", "extensions", "shard_depth", "follow_symlinks"),
    "lease_seconds",
}


class CleanConfig(BaseModel):
    """Every knob of a cleaning run. Credentials are not among them: they come from the standard AWS sources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str = Field(description="Archive to scan: folder or s3://bucket/prefix (recursive).")
    dst: str | None = Field(None, description="Where restored images go (mirrored names); none: scan and report only.")
    threshold: int = Field(50, ge=2, le=100, description="Restore JPEGs whose estimated quality is below this.")
    reports: str | None = Field(
        None, description="Folder or s3:// prefix for the reports (default: DST/_reports; required without DST)."
    )
    dry_run: bool = Field(
        False, description="Scan and count what would be restored; write nothing (no report, no scan state)."
    )
    incremental: bool = Field(
        True, description="Reuse the previous report's findings for files whose size and mtime are unchanged."
    )
    extensions: Extensions = Field(JPEG_EXTENSIONS, description="File extensions scanned (case-insensitive).")
    follow_symlinks: bool = Field(
        False, description="Follow symbolic links in a local SRC (loops detected); default: report each as unreadable."
    )
    lease_seconds: LeaseSeconds = 300
    header_bytes: int = Field(
        65536, ge=1024, description="Bytes read per file for the scan (more only when its headers run longer)."
    )
    shard_depth: int = Field(
        1, ge=0, le=8, description="Directory levels the archive is cut into shards at (as for the restore)."
    )
    scan_threads: int = Field(16, ge=1, description="Concurrent reads inside one scan task (they wait on I/O).")
    scan_cpus: float = Field(0.25, gt=0, description="CPUs reserved per scan actor.")
    scan_workers: int = Field(4, ge=1, description="Most scan actors (the pool grows from 1).")
    restore: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the restore step, as for `dagn restore` (workers, gpus_per_worker, weights, ...).",
    )
    s3: S3Settings = Field(
        default_factory=S3Settings, description="Where S3 is (endpoint, region); keys come from the AWS_* variables."
    )

    @model_validator(mode="after")
    def _check(self) -> CleanConfig:
        if self.dst is None and self.reports is None:
            raise ValueError("reports: give a reports location when there is no DST (scan-only run)")
        if self.dst is not None and inside(self.dst, self.src):
            raise ValueError(f"dst: {self.dst} must not be the source or lie inside it (it would be scanned next time)")
        clash = sorted(_SET_BY_CLEAN & set(self.restore))
        if clash:
            raise ValueError(f"restore: {', '.join(clash)} are set by the cleaning job itself")
        if self.dst is not None:
            try:
                self.restore_config("validation-only")
            except ValidationError as e:
                problems = "; ".join(
                    f"restore.{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()
                )
                raise ValueError(problems) from None
        return self

    @property
    def reports_uri(self) -> str:
        return self.reports or posixpath.join(str(self.dst).rstrip("/"), REPORTS_DIR)

    def restore_config(self, list_file: str):
        """The restore job for the files listed in ``list_file`` (a folder of lists: one per shard), with
        max_qf = threshold - 1 as a guard."""
        from pipeline.restore import RestoreConfig

        return RestoreConfig(
            src=self.src,
            dst=self.dst,
            list_file=list_file,
            max_qf=self.threshold - 1,
            shard_depth=self.shard_depth,
            follow_symlinks=self.follow_symlinks,
            lease_seconds=self.lease_seconds,
            s3=self.s3,
            **self.restore,
        )
