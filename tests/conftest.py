"""Shared fixtures: a real SeaweedFS S3 server on loopback and a real local Ray, each started once per session."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running :class:`jobs.local_s3.LocalS3`; its AWS_* variables are set for the whole session."""
    from jobs.local_s3 import LocalS3

    server = LocalS3(tmp_path_factory.mktemp("s3")).start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket name on the session's S3 server."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A local Ray with 2 CPUs and a small object store; workers inherit the S3 variables."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=512 * 2**20,
        log_to_driver=False,
        runtime_env={"env_vars": s3_server.env()},
    )
    yield ray
    ray.shutdown()
