"""ray-cluster.yaml validates against the cluster launcher schema inside the ray wheel, and says what we mean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())


def test_validates_against_the_schema_in_the_ray_wheel(config):
    assert SCHEMA.is_file(), f"no cluster schema in the ray wheel at {SCHEMA}"
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))
    # And Ray's own check, after it fills in the provider defaults exactly as `ray up` does.
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(config))


def test_the_schema_check_has_teeth(config):
    broken = {**config, "idle_timeout_minutes": "ten"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))
    typo = {**config, "available_node_types": {**config["available_node_types"], "x": {"resources": {}}}}
    with pytest.raises(jsonschema.ValidationError, match="node_config"):
        jsonschema.validate(typo, json.loads(SCHEMA.read_text()))


def test_head_runs_no_work_and_gpu_workers_autoscale_on_spot(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "no GPU worker type"
    for t in gpu:
        assert t["min_workers"] == 0 < t["max_workers"] <= config["max_workers"]
        assert t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert 1 <= config["idle_timeout_minutes"] <= 30
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["cache_stopped_nodes"] is False  # spot nodes cannot be stopped


def test_setup_installs_this_project_with_the_pinned_versions(config):
    assert config["file_mounts"]["~/dagn"] == "."
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = " ".join(config[key])
        assert "torch==2.13.0" in commands
        assert "-c ~/dagn/constraints.txt -e ~/dagn" in commands
    assert "cu1" in " ".join(config["worker_setup_commands"])  # CUDA torch on the GPU workers
    assert {".venv", ".git", "/runs", "/out", "/data"} <= set(config["rsync_exclude"])
    assert ".gitignore" in config["rsync_filter"]


def test_security_defaults(config):
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # reached through `ray dashboard` (SSH tunnel) only
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(config[key])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    text = (ROOT / "ray-cluster.yaml").read_text()
    assert not re.search(r"(?i)aws_secret_access_key|aws_access_key_id|AKIA[A-Z0-9]{16}", text)
    for t in config["available_node_types"].values():
        assert "Name" in t["node_config"]["IamInstanceProfile"]  # S3 access from instance roles, not keys


def test_every_node_knows_its_region(config):
    """S3 clients on the nodes get the provider's region (no us-east-1 guess that refuses buckets elsewhere)."""
    region = config["provider"]["region"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert f"export AWS_REGION={region} " in " ".join(config[key])
