"""Locations resolve to the same behaviour on a local disk and on a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.storage import list_files, read_bytes, resolve, resolve_file, write_bytes_atomic


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
