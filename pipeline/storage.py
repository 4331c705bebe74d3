"""The one place where a location string (a local path or ``s3://bucket/prefix``) becomes a pyarrow filesystem.

S3 credentials come from the standard AWS sources (environment, shared config, instance roles); an explicit endpoint
(any S3-compatible server) may be given. Credentials are never part of a location or a log line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.keys import check_key, contain

log = logging.getLogger(__name__)

__all__ = [
    "Extensions",
    "ListedFile",
    "ListingProblem",
    "Location",
    "S3Settings",
    "delete_tree",
    "inside",
    "is_s3",
    "iter_listing",
    "list_entries",
    "list_files",
    "local_copy",
    "location",
    "parquet_bytes",
    "read_bytes",
    "redact",
    "resolve",
    "resolve_file",
    "write_bytes_atomic",
]


def _normalise_extensions(value: object) -> object:
    """ "JPG, .jpeg" or ["jpg", ".JPEG"] -> (".jpg", ".jpeg"): what users type, as ``splitext`` returns it."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        return tuple("." + str(v).strip().lower().lstrip(".") for v in value if str(v).strip())
    return value


Extensions = Annotated[tuple[str, ...], BeforeValidator(_normalise_extensions)]
"""A config field of file extensions, lower case with a leading dot, given as a list or a comma-separated string."""


class S3Settings(BaseModel):
    """Where S3 is. Keys are deliberately absent: they are read from the standard AWS sources by the clients."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333 (default: AWS_ENDPOINT_URL or AWS)."
    )
    region: str | None = Field(
        None,
        description="Region (default: AWS_REGION / AWS_DEFAULT_REGION; else, on AWS, the bucket's own region, asked "
        "of S3 once; a custom endpoint without one gets pyarrow's default).",
    )

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")

    def resolved_region(self, bucket: str | None = None) -> str | None:
        """The configured region; with none and no custom endpoint, the bucket's (pyarrow does not follow S3's
        region redirect, so guessing us-east-1 breaks every bucket elsewhere)."""
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region or self.resolved_endpoint() or not bucket:
            return region
        return _bucket_region(bucket)

    max_attempts: int = Field(
        5,
        ge=1,
        description="Attempts per S3 request on transient errors (throttling, 5xx, timeouts, dropped connections), "
        "with exponential backoff between them; permanent ones (403, 404, NoSuchBucket) fail at once.",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to connect to S3 before the attempt fails.")
    read_timeout: float = Field(
        60.0, gt=0, description="Seconds a request may wait for the server (a stalled server) before it is retried."
    )
    multipart_threshold: int = Field(
        64 * 2**20,
        ge=5 * 2**20,
        description="Outputs up to this size are written with one PUT (nothing to abort); larger ones in parts of "
        "this size, aborted on failure (a killed run's are left for the bucket's AbortIncompleteMultipartUpload rule).",
    )

    def _credentials(self, bucket: str | None) -> tuple[str | None, ...]:
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        return (self.resolved_endpoint(), self.resolved_region(bucket), *(os.environ.get(n) for n in names))

    def filesystem(self, bucket: str | None = None) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem for reads and listings (one per settings, region and credentials, shared)."""
        return _filesystem(self, self._credentials(bucket))

    def client(self, bucket: str | None = None):
        """A boto3 S3 client for writes (one per settings, region and credentials, shared; thread-safe)."""
        return _client(self, self._credentials(bucket))


@lru_cache(maxsize=16)
def _filesystem(settings: S3Settings, credentials: tuple[str | None, ...]) -> pafs.S3FileSystem:
    endpoint, region, key, secret, token = credentials
    kwargs: dict[str, object] = {
        "connect_timeout": settings.connect_timeout,
        "request_timeout": settings.read_timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
    }
    if region:
        kwargs["region"] = region
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=token)
    fs = pafs.S3FileSystem(**kwargs)
    _SETTINGS_OF[id(fs)] = settings  # the cache keeps fs alive, so its id names it for write_bytes_atomic
    return fs


_SETTINGS_OF: dict[int, S3Settings] = {}


@lru_cache(maxsize=16)
def _client(settings: S3Settings, credentials: tuple[str | None, ...]):
    import boto3
    from botocore.config import Config

    endpoint, region, key, secret, token = credentials
    # A session of its own: boto3's default one keeps the credentials it first found, whatever the cache key says.
    keys = {"aws_access_key_id": key, "aws_secret_access_key": secret, "aws_session_token": token} if key else {}
    session = boto3.session.Session(**keys)
    config = Config(
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},  # standard: transient errors only
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)


@lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError as e:  # offline, or no such bucket: the requests that follow will say so
        log.warning("cannot find the region of bucket %s (%s); set AWS_REGION or s3.region", bucket, redact(str(e)))
        return None


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


class Location(BaseModel):
    """A resolved location: the filesystem and the root path on it (``bucket/prefix`` for S3, absolute locally)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    uri: str
    fs: pafs.FileSystem
    root: str

    def path(self, relative: str = "") -> str:
        """Path on :attr:`fs` of a file given relative to the root (always with forward slashes).

        Raises:
            UnsafeKeyError: when ``relative`` could name anything outside the root (see :mod:`pipeline.keys`).
        """
        return contain(self.root, check_key(relative)) if relative else self.root

    def uri_of(self, relative: str) -> str:
        """The URI of ``relative`` as text (for reports; no check, so a refused key is shown as it was given)."""
        return f"{self.uri.rstrip('/')}/{relative}"

    def child(self, relative: str) -> Location:
        """The location of a folder below this one, on the same filesystem."""
        return Location(uri=self.uri_of(relative), fs=self.fs, root=self.path(relative))


def resolve(uri: str, s3: S3Settings | None = None) -> Location:
    """Turn a path or ``s3://bucket/prefix`` into a :class:`Location`."""
    if is_s3(uri):
        root = uri[len("s3://") :].strip("/")
        if not root:
            raise ValueError(f"{uri!r} names no bucket")
        return Location(uri=uri, fs=(s3 or S3Settings()).filesystem(root.split("/", 1)[0]), root=root)
    if "://" in uri:
        raise ValueError(f"unsupported location {uri!r}: use a local path or s3://bucket/prefix")
    path = Path(uri).expanduser().resolve()
    return Location(uri=str(path), fs=pafs.LocalFileSystem(), root=path.as_posix())


@lru_cache(maxsize=16)
def location(uri: str, s3: S3Settings) -> Location:
    """:func:`resolve`, once per process and location: workers call it per batch, and an S3 filesystem is costly."""
    return resolve(uri, s3)


def _normalised(uri: str) -> str:
    return uri.rstrip("/") if is_s3(uri) else Path(uri).expanduser().resolve().as_posix()


def inside(child: str, parent: str) -> bool:
    """Whether location ``child`` is ``parent`` or lies below it (no filesystem access)."""
    c, p = _normalised(child), _normalised(parent)
    return c == p or c.startswith(p.rstrip("/") + "/")


def resolve_file(uri: str, s3: S3Settings | None = None) -> tuple[Location, str]:
    """One file's folder as a :class:`Location`, and the file's name in it (``s3://b/w/m.safetensors``, ``m.pt``)."""
    return resolve(posixpath.dirname(uri) or ".", s3), posixpath.basename(uri)


@dataclass(frozen=True)
class ListedFile:
    """A file found below a root: its path relative to the root, size in bytes, modification time (if known)."""

    path: str
    size: int
    mtime_ns: int | None


@dataclass(frozen=True)
class ListingProblem:
    """An entry below a root that is no readable file (a dangling link, a link loop, a link not followed)."""

    path: str
    error: str


def iter_listing(
    location: Location, recursive: bool = True, follow_symlinks: bool = False
) -> Iterator[ListedFile | ListingProblem]:
    """Every file below the root (unsorted), from one listing, and every entry that cannot be one.

    Local folders are walked here rather than by pyarrow, which follows directory links into cycles (a ``loop -> .``
    link listed each file 41 times) and drops dangling links without a word. Without ``follow_symlinks`` a link is
    reported, not read (it may point outside the root); with it, links are followed and a directory reached again on
    its own path is reported as a loop. S3 has no links.
    """
    if not isinstance(location.fs, pafs.LocalFileSystem):
        selector = pafs.FileSelector(location.root, recursive=recursive, allow_not_found=True)
        prefix = location.root.rstrip("/") + "/"
        for info in location.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.path.startswith(prefix):
                yield ListedFile(info.path[len(prefix) :], info.size or 0, info.mtime_ns)
        return
    if os.path.isdir(location.root):
        root_stat = os.stat(location.root)
        yield from _walk(location.root, "", recursive, follow_symlinks, {(root_stat.st_dev, root_stat.st_ino)})


def _walk(
    folder: str, relative: str, recursive: bool, follow: bool, ancestors: set[tuple[int, int]]
) -> Iterator[ListedFile | ListingProblem]:
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        yield ListingProblem(relative or ".", f"cannot list folder: {e.strerror or e}")
        return
    for entry in entries:
        name = f"{relative}{entry.name}"
        try:
            link = entry.is_symlink()
            if link and not follow:
                kind = "directory" if entry.is_dir() else "file" if entry.is_file() else "dangling"
                yield ListingProblem(name, _link_message(kind))
                continue
            if entry.is_dir():
                if not recursive:
                    continue
                st = entry.stat()
                if (st.st_dev, st.st_ino) in ancestors:
                    yield ListingProblem(name, "symbolic link loop: it leads back to a folder above it")
                    continue
                yield from _walk(entry.path, name + "/", recursive, follow, ancestors | {(st.st_dev, st.st_ino)})
            elif entry.is_file():
                st = entry.stat()
                yield ListedFile(name, st.st_size, st.st_mtime_ns)
            elif link:
                yield ListingProblem(name, _link_message("dangling"))
        except OSError as e:  # links to each other (ELOOP), permissions, a file removed while listing
            loop = e.errno == errno.ELOOP
            yield ListingProblem(name, "symbolic link loop" if loop else f"cannot read entry: {e.strerror or e}")


def _link_message(kind: str) -> str:
    if kind == "dangling":
        return "dangling symbolic link: its target does not exist"
    return f"symbolic link to a {kind}, not followed (follow_symlinks reads what links point to)"


def list_entries(
    location: Location,
    extensions: tuple[str, ...] | None = None,
    recursive: bool = True,
    *,
    follow_symlinks: bool = False,
    problems: list[ListingProblem] | None = None,
) -> list[tuple[str, int]]:
    """Sorted ``(relative path, size in bytes)`` of every file below the root, from one listing (no per-file HEAD).

    Entries that are no readable file (see :func:`iter_listing`) go to ``problems`` when given (links with a
    directory's name whatever the extensions), otherwise they are logged.
    """
    found, trouble = [], []
    for item in iter_listing(location, recursive, follow_symlinks):
        suffix = posixpath.splitext(item.path)[1].lower()
        if isinstance(item, ListedFile):
            if extensions is None or suffix in extensions:
                found.append((item.path, item.size))
        elif extensions is None or suffix in extensions or not suffix:
            trouble.append(item)
    if problems is not None:
        problems.extend(sorted(trouble, key=lambda p: p.path))
    elif trouble:
        log.warning("%d entries under %s are no readable files, e.g. %s", len(trouble), location.uri, trouble[0])
    return sorted(found)


def list_files(location: Location, extensions: tuple[str, ...] | None = None, recursive: bool = True) -> list[str]:
    """Sorted paths relative to the root of every file below it (optionally only these lower-case extensions)."""
    return [relative for relative, _ in list_entries(location, extensions, recursive)]


def delete_tree(fs: pafs.FileSystem, path: str) -> None:
    """Remove a folder (an S3 prefix) and everything below it; a missing one is fine."""
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def redact(text: str) -> str:
    """``text`` with the values of the AWS credential variables blanked out: for any message that may be logged or
    stored (S3 error texts can echo request details)."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of one zstd-compressed Parquet file (written whole with :func:`write_bytes_atomic`)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


@contextlib.contextmanager
def local_copy(location: Location, relative: str) -> Iterator[Path]:
    """A local path holding ``relative`` of ``location`` for the block: the file itself on a local disk, a temporary
    copy (removed after the block) on S3; for readers that need a path (safetensors, ``torch.load``).

    Raises:
        FileNotFoundError: when there is no such file.
    """
    path = location.path(relative)
    if isinstance(location.fs, pafs.LocalFileSystem):
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "no such file", location.uri_of(relative))
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="dagn-") as tmp:
        local = Path(tmp) / posixpath.basename(relative)
        local.write_bytes(read_bytes(location.fs, path))
        yield local


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write so that readers see either nothing or the whole file.

    On S3 an object up to ``multipart_threshold`` is one PUT, atomic by itself and leaving nothing behind when it
    fails; a larger one goes up in parts that are aborted if any step fails (pyarrow's stream opened a multipart
    upload for every object, even of a few bytes, and left it behind when a stalled server made it fail). On a
    local disk the bytes go to a hidden temporary name and are renamed.
    """
    parent = posixpath.dirname(path)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
        return
    settings = _SETTINGS_OF.get(id(fs))
    if settings is None:  # a filesystem made elsewhere: pyarrow's own stream
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    bucket, _, key = path.partition("/")
    client = settings.client(bucket)
    if len(data) <= settings.multipart_threshold:
        client.put_object(Bucket=bucket, Key=key, Body=data)
        return
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        size, parts = settings.multipart_threshold, []
        for number, start in enumerate(range(0, len(data), size), 1):
            part = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data[start : start + size]
            )
            parts.append({"PartNumber": number, "ETag": part["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    finally:
        _abort_uploads(client, bucket, key)


def _abort_uploads(client, bucket: str, key: str) -> None:
    """Abort every unfinished upload of ``key``: ours when it failed, and those of retried CreateMultipartUpload
    requests whose first tries reached a stalled server and were answered too late (their ids never came back).
    DST's lease makes this run the key's only writer, so none of them is another writer's."""
    try:
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        for upload in (u for u in uploads if u["Key"] == key):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    except Exception as e:
        log.warning("could not abort unfinished uploads of %s (the bucket's lifecycle rule removes them): %s", key, e)
