"""infra/: every manifest parses and holds together: kinds and API versions, entrypoints that are real dagn commands
(parsed with the real command definitions), one image and Ray version everywhere, no credential written inline."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from jobs.cli import app
from jobs.submit import check_command

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

API_VERSIONS = {
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "RayCronJob": "ray.io/v1",
    "CronJob": "batch/v1",
    "ConfigMap": "v1",
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)
# Shapes of real credentials: AWS key ids, long hex/base64 runs, private keys.
SECRET_VALUE = re.compile(
    r"(AKIA|ASIA)[A-Z0-9]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|[0-9a-f]{32,}"
    r"|(?=[A-Za-z0-9+/]*[0-9])(?=[A-Za-z0-9+/]*[A-Z])(?=[A-Za-z0-9+/]*[a-z])[A-Za-z0-9+/]{40,}"  # base64-ish runs
)
CRON = re.compile(r"^(\S+\s+){4}\S+$")


def _documents() -> list[tuple[str, dict]]:
    """Every YAML document under infra/, plus RayJobs embedded in ConfigMaps (as '<file>#<key>')."""
    docs = []
    for path in sorted(INFRA.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            name = str(path.relative_to(ROOT))
            docs.append((name, doc))
            if doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        docs += [(f"{name}#{key}", d) for d in yaml.safe_load_all(text) if d]
    return docs


DOCS = _documents()


def _ray_job_specs() -> list[tuple[str, dict]]:
    """(where, RayJob spec) for RayJobs and for the job template of RayCronJobs."""
    specs = []
    for where, doc in DOCS:
        if doc["kind"] == "RayJob":
            specs.append((where, doc["spec"]))
        elif doc["kind"] == "RayCronJob":
            specs.append((where, doc["spec"]["jobTemplate"]))
    return specs


def _cluster_specs() -> list[tuple[str, dict]]:
    found = [(w, d["spec"]) for w, d in DOCS if d["kind"] == "RayCluster"]
    return found + [(w, s["rayClusterSpec"]) for w, s in _ray_job_specs()]


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def _ray_containers() -> list[tuple[str, dict]]:
    out = []
    for where, spec in _cluster_specs():
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]
        out += [(where, c) for t in templates for c in _containers(t["spec"])]
    return out


def _all_containers() -> list[tuple[str, dict]]:
    out = list(_ray_containers())
    for where, doc in DOCS:
        if doc["kind"] == "CronJob":
            out += [(where, c) for c in _containers(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    return out


def test_every_document_has_a_known_kind_and_api_version():
    assert DOCS, "no YAML found under infra/"
    for where, doc in DOCS:
        assert doc.get("kind") in API_VERSIONS, f"{where}: unexpected kind {doc.get('kind')}"
        assert doc.get("apiVersion") == API_VERSIONS[doc["kind"]], f"{where}: {doc['kind']} {doc.get('apiVersion')}"
        meta = doc.get("metadata") or {}
        assert meta.get("name") or meta.get("generateName"), f"{where}: no name"


def test_the_required_resources_exist():
    kinds = [doc["kind"] for _, doc in DOCS]
    assert "RayCluster" in kinds
    assert "RayCronJob" in kinds
    assert "CronJob" in kinds
    commands = {shlex.split(spec["entrypoint"])[1] for _, spec in _ray_job_specs()}
    assert {"restore", "train", "clean"} <= commands


@pytest.mark.parametrize(("where", "spec"), _ray_job_specs(), ids=[w for w, _ in _ray_job_specs()])
def test_entrypoints_are_valid_dagn_commands(where, spec):
    words = shlex.split(spec["entrypoint"])
    assert words[0] == "dagn", f"{where}: entrypoint does not run dagn"
    # parsed with the real command definitions: names, options, types
    check_command(typer.main.get_command(app), words[1], words[2:])
    assert spec.get("shutdownAfterJobFinishes") is True, f"{where}: the job's cluster would outlive it"


def test_nightly_schedules_run_the_clean_command():
    schedules = []
    for where, doc in DOCS:
        if doc["kind"] in ("RayCronJob", "CronJob"):
            assert CRON.match(doc["spec"]["schedule"]), f"{where}: bad schedule"
            schedules.append(doc["spec"]["schedule"])
        if doc["kind"] == "RayCronJob":
            assert shlex.split(doc["spec"]["jobTemplate"]["entrypoint"])[:2] == ["dagn", "clean"]
        if doc["kind"] == "CronJob":
            (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            assert container["command"] == ["kubectl"]
            assert container["args"][:2] == ["create", "-f"]
            volumes = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
            config_map = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
            embedded = [d for w, d in DOCS if "#" in w and d["kind"] == "RayJob"]
            assert any(w.endswith("#rayjob.yaml") for w, _ in DOCS), "the CronJob's RayJob is missing"
            assert any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == config_map for _, d in DOCS)
            assert [shlex.split(d["spec"]["entrypoint"])[:2] for d in embedded] == [["dagn", "clean"]]
    assert len(set(schedules)) == 1, "RayCronJob and CronJob should describe the same schedule"


def test_one_image_and_ray_version_everywhere():
    images = {c["image"] for _, c in _ray_containers()}
    assert len(images) == 1, images
    (image,) = images
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert image.rsplit("/", 1)[-1] == f"dagn:{version}"
    ray_pin = re.search(r"^ray==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert {spec["rayVersion"] for _, spec in _cluster_specs()} == {ray_pin}
    for where, container in _all_containers():
        assert ":" in container["image"].rsplit("/", 1)[-1], f"{where}: {container['image']} has no tag"
        assert not container["image"].endswith(":latest"), f"{where}: unpinned image"


def test_ray_clusters_use_token_auth_and_a_head_without_work():
    for where, spec in _cluster_specs():
        assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: no token auth"
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{where}: work on the head"
        groups = spec["workerGroupSpecs"]
        assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for g in groups)
        assert all(g["minReplicas"] == 0 for g in groups), f"{where}: idle GPUs kept"
        assert spec.get("enableInTreeAutoscaling") is True


def test_no_credentials_inline():
    for where, doc in DOCS:
        assert doc["kind"] != "Secret", f"{where}: secrets are created out of band, not committed"
    for where, container in _all_containers():
        for env in container.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{where}: {env['name']} written inline"
                assert "secretKeyRef" in env["valueFrom"], f"{where}: {env['name']} not from a secret"
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert not SECRET_VALUE.search(text), f"{path}: looks like a credential"


def test_dockerfile():
    text = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1)
    assert base.startswith("pytorch/pytorch:2.13.0-cuda"), base  # the pinned torch, CUDA build
    assert "-c constraints.txt" in text
    assert re.search(r"^USER ray$", text, re.M), "the image must not run as root"
    ray_pin = re.search(r"^ray==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert f"ray.__version__ == '{ray_pin}'" in text
    lines = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**"  # everything excluded, then the project re-included: no .venv, runs/ or data/
    assert not any(p.startswith("!") and (".venv" in p or "runs" in p) for p in ignore)


def test_resumable_jobs_retry_and_docs_agree_on_the_kuberay_version():
    for where, spec in _ray_job_specs():
        if shlex.split(spec["entrypoint"])[1] in ("restore", "clean"):  # both skip what is done: retrying is safe
            assert spec.get("backoffLimit", 0) >= 1, f"{where}: a failed attempt is never retried (default 0)"
    uses_secret_name = any("secretName" in (spec.get("authOptions") or {}) for _, spec in _cluster_specs())
    texts = {p: p.read_text() for p in [*INFRA.rglob("*.y*ml"), INFRA / "README.md", ROOT / "README.md"]}
    for path, text in texts.items():
        for major, minor in re.findall(r"KubeRay[^\n]*?>= ?(\d+)\.(\d+)", text) + re.findall(
            r">= ?(\d+)\.(\d+)[^\n]*?token", text
        ):
            if uses_secret_name:  # authOptions.secretName exists from KubeRay 1.6.0
                assert (int(major), int(minor)) >= (1, 6), f"{path}: promises KubeRay {major}.{minor}"
