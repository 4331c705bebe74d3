"""Locations resolve to the same behaviour on a local disk and on a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.storage import S3Settings, list_entries, list_files, read_bytes, resolve, resolve_file, write_bytes_atomic


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return resolve(str(tmp_path / "root"))
    bucket = request.getfixturevalue("s3_bucket")
    return resolve(f"s3://{bucket}/root")


def test_write_list_read(location):
    for rel in ["a.jpg", "sub/b.JPG", "sub/deeper/c.png", "notes.txt"]:
        write_bytes_atomic(location.fs, location.path(rel), rel.encode())
    assert list_files(location) == ["a.jpg", "notes.txt", "sub/b.JPG", "sub/deeper/c.png"]
    assert list_files(location, extensions=(".jpg",)) == ["a.jpg", "sub/b.JPG"]
    assert list_files(location, recursive=False) == ["a.jpg", "notes.txt"]
    assert read_bytes(location.fs, location.path("sub/deeper/c.png")) == b"sub/deeper/c.png"


def test_missing_root_lists_nothing(location):
    assert list_files(location) == []


def test_bad_locations_are_clear_errors():
    with pytest.raises(ValueError, match="no bucket"):
        resolve("s3://")
    with pytest.raises(ValueError, match="unsupported location"):
        resolve("gs://bucket/x")


def test_resolve_file_splits_a_file_uri_into_its_folder_and_name(tmp_path):
    folder, name = resolve_file(str(tmp_path / "w" / "m.safetensors"))
    assert (folder.path(), name) == (str(tmp_path / "w"), "m.safetensors")
    folder, name = resolve_file("m.safetensors")
    assert (folder.path(name), name) == (str(Path.cwd() / "m.safetensors"), "m.safetensors")


def _tree_with_links(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"a")
    (root / "sub" / "b.jpg").write_bytes(b"b")
    (root / "loop").symlink_to(".")  # once listed every file 41 times, outputs nested 40 deep
    (root / "sub" / "up").symlink_to("..")
    (root / "self1").symlink_to("self2")  # two links to each other once made the listing run forever
    (root / "self2").symlink_to("self1")
    (root / "gone.jpg").symlink_to("missing.jpg")  # dangling: once vanished, no row
    (root / "link.jpg").symlink_to(root / "a.jpg")
    return root


def test_local_listing_reports_links_and_never_loops(tmp_path):
    location = resolve(str(_tree_with_links(tmp_path / "root")))
    problems = []
    assert list_entries(location, (".jpg",), problems=problems) == [("a.jpg", 1), ("sub/b.jpg", 1)]
    assert {p.path: p.error.split(":")[0].split(",")[0] for p in problems} == {
        "gone.jpg": "dangling symbolic link",
        "link.jpg": "symbolic link to a file",
        "loop": "symbolic link to a directory",
        "self1": "symbolic link loop",
        "self2": "symbolic link loop",
        "sub/up": "symbolic link to a directory",
    }

    problems = []
    files = list_entries(location, (".jpg",), follow_symlinks=True, problems=problems)
    assert files == [("a.jpg", 1), ("link.jpg", 1), ("sub/b.jpg", 1)]
    errors = {p.path: p.error for p in problems}
    assert set(errors) == {"gone.jpg", "loop", "self1", "self2", "sub/up"}
    assert all("loop" in errors[k] for k in ("loop", "sub/up", "self1", "self2")) and "dangling" in errors["gone.jpg"]


def test_restore_and_clean_turn_link_problems_into_rows(tmp_path):
    from pipeline.clean.scan import scan_listing
    from pipeline.codec import OutputFormat
    from pipeline.listing import Shard
    from pipeline.restore.plan import PlanOptions, plan_shard

    src = _tree_with_links(tmp_path / "src")
    opts = PlanOptions(
        str(src),
        str(tmp_path / "dst"),
        S3Settings(),
        OutputFormat.same,
        (".jpg",),
        False,
        None,
        None,
        "run",
        dry_run=True,
    )
    rows = [r for block in plan_shard(Shard("", True), opts) for r in block if r.get("key")]
    assert sorted(r["key"] for r in rows if r["status"] == "pending") == ["a.jpg", "sub/b.jpg"]
    failed = {r["key"]: r["error"] for r in rows if r["status"] == "failed"}
    assert set(failed) == {"gone.jpg", "link.jpg", "loop", "self1", "self2", "sub/up"}

    listing, problems = scan_listing(resolve(str(src)), Shard("", True), (".jpg",), follow_symlinks=True)
    assert listing.column("key").to_pylist() == ["a.jpg", "link.jpg", "sub/b.jpg"]
    assert {p["kind"] for p in problems} == {"unreadable"} and len(problems) == 5


def test_s3_region_is_never_guessed(monkeypatch):
    from pipeline.storage import S3Settings

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    assert S3Settings(region="eu-west-1").resolved_region("bucket") == "eu-west-1"
    assert S3Settings(endpoint_url="http://127.0.0.1:1").resolved_region("bucket") is None  # the server's default
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert S3Settings().resolved_region("bucket") == "ap-south-1"
