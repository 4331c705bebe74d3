"""The model pool grows onto a node that joins after the job began: a real two-node local Ray cluster (a head, then
a second node added once the first outputs are written), with ``dagn restore`` as its driver in a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

N_IMAGES = 1200  # Ray Data learns of a new node's resources within about a minute: the run must outlast that


def _photo_like(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, 384)[None, :, None] + rng.normal(0, 25, (256, 384, 3))
    buffer = io.BytesIO()
    Image.fromarray(ramp.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=20)
    return buffer.getvalue()


def test_the_model_pool_grows_onto_a_node_that_joins_during_the_run(tmp_path):
    from ray.cluster_utils import Cluster

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(N_IMAGES):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        if i < 24:
            (src / f"d{i % 4}/img{i:04d}.jpg").write_bytes(_photo_like(i))
        else:  # hard links of the first ones: a big archive, cheaply
            os.link(src / f"d{i % 4}/img{i % 24:04d}.jpg", src / f"d{i % 4}/img{i:04d}.jpg")
    node = {"num_cpus": 2, "object_store_memory": 200 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    dagn = str(Path(sys.executable).parent / "dagn")
    command = [dagn, "restore", str(src), str(dst), "--address", cluster.address, "--max-pixels", "1000000"]
    try:
        driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not any(dst.glob("d*/*.jpg")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.poll() is None, "the run ended before a second node could join: make it longer"
        done_alone = len(list(dst.glob("d*/*.jpg")))
        cluster.add_node(**node)  # a node joins: an autoscaler's, or `ray start --address` by hand
        output = driver.communicate(timeout=600)[0].decode(errors="replace")
        assert driver.returncode == 0, output
    finally:
        if driver.poll() is None:
            driver.kill()
        cluster.shutdown()

    assert len(list(dst.glob("d*/*.jpg"))) == N_IMAGES
    (history,) = (dst / "_manifest" / "runs").glob("*.json")
    nodes = json.loads(history.read_text())["nodes"]  # restored rows per Ray node
    assert len(nodes) == 2, f"all {N_IMAGES} restored on one node ({done_alone} before the second joined): {nodes}"
    assert sum(nodes.values()) == N_IMAGES and min(nodes.values()) > 0
