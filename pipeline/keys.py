"""Input keys are untrusted: the one place where a key becomes a source path and an output key, or is refused.

A key comes from a listing of SRC (an S3 key may legally hold ``..`` or ``//``), from a list file or from a bucket
somebody else fills. Joined naively to a root, ``../x`` or ``a//etc/x`` (``posixpath.join`` restarts at an absolute
segment) reads and writes anywhere the job can. So every key is checked segment by segment (:func:`check_key`) and
every joined path is checked again, after normalising, against its root (:func:`contain`, which
:meth:`pipeline.storage.Location.path` applies to every path it builds). A refused key becomes a failed row naming it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.codec import OutputFormat, output_key

if TYPE_CHECKING:
    from pipeline.storage import Location

__all__ = ["KeyPaths", "UnsafeKeyError", "check_key", "contain", "key_paths", "key_problem"]


class UnsafeKeyError(ValueError):
    """A key that could name a file outside its root (or is no usable name at all)."""


def key_problem(key: str) -> str | None:
    """Why ``key`` is refused (as a message naming it), or None when it is a plain relative path of non-empty
    segments other than ``.`` and ``..``."""
    if not key:
        problem = "it is empty"
    elif "\x00" in key:
        problem = "it holds a NUL character"
    elif "\\" in key:
        problem = "it holds a backslash"
    elif key.startswith("/"):
        problem = "it starts with /"
    elif any(segment in ("", ".", "..") for segment in key.split("/")):
        problem = "it has an empty, '.' or '..' segment"
    else:
        return None
    return f"refused key {key!r}: {problem} (keys must stay below their root)"


def check_key(key: str) -> str:
    """``key`` itself when :func:`key_problem` finds nothing wrong with it.

    Raises:
        UnsafeKeyError: naming the key and what is wrong with it.
    """
    problem = key_problem(key)
    if problem:
        raise UnsafeKeyError(problem)
    return key


def contain(root: str, relative: str) -> str:
    """``root/relative``, refused unless it names ``root`` itself or a path below it once normalised."""
    joined = posixpath.normpath(posixpath.join(root, relative)) if relative else root
    base = root.rstrip("/")
    if "\x00" in relative or not (joined == base or joined.startswith(base + "/") or base == ""):
        raise UnsafeKeyError(f"refused key {relative!r}: it leads outside {root}")
    return joined


@dataclass(frozen=True)
class KeyPaths:
    """Where one input is read from and its output written to: paths on the SRC and DST filesystems."""

    key: str
    source: str
    out_key: str
    output: str


def key_paths(key: str, src: Location, dst: Location, fmt: OutputFormat) -> KeyPaths:
    """The checked source path, output key and output path of input ``key`` (no filesystem access).

    Raises:
        UnsafeKeyError: when the key (or its output name) could leave SRC or DST.
    """
    check_key(key)
    out = check_key(output_key(key, fmt))
    return KeyPaths(key=key, source=src.path(key), out_key=out, output=dst.path(out))
