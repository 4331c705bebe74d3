"""A lease in DST, so two runs of restore or clean never work on the same destination at once.

Two runs on one DST would restore the same inputs twice and race on the manifest; on a cluster this happens when a
nightly clean outlives its night (a CronJob's ``Forbid`` covers only the pod that creates the RayJob). The lease is
one small JSON file, ``DST/_manifest/lease.json``, that names its holder and when it expires:

* S3: taken with a conditional PUT (``If-None-Match: *``: exactly one of two racing runs gets it), renewed and taken
  over with ``If-Match`` on the ETag last seen, released with a conditional DELETE, so every step is atomic;
* local folders: created with ``O_CREAT | O_EXCL``; an expired lease is renamed away before a new one is created (two
  runs that find the same expired lease within the same instant could both proceed: local folders are for one
  machine, where the holder's heartbeat makes an expired lease mean a dead run).

A heartbeat thread renews the lease every third of its time, so a live run keeps it however long it works and a dead
run's lease (killed driver, lost node) expires after ``seconds`` and is then taken over by the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from pipeline.storage import Location, S3Settings

__all__ = ["LEASE_FILE", "Lease", "LeaseHeldError", "hold"]

log = logging.getLogger(__name__)

LEASE_FILE = "_manifest/lease.json"
_held: set[str] = set()  # destinations this process holds: clean's own restore step runs inside clean's lease


class LeaseHeldError(ValueError):
    """Another live run holds the destination's lease."""


@dataclass
class Lease:
    """A held lease; :meth:`release` (or leaving :func:`hold`) gives it up."""

    dst: Location
    s3: S3Settings
    seconds: float
    what: str
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    etag: str | None = None
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def _local(self) -> bool:
        return isinstance(self.dst.fs, pafs.LocalFileSystem)

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "owner": self.owner,
                "what": self.what,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "renewed": now,
                "expires": now + self.seconds,
            }
        ).encode()

    # -- S3 ------------------------------------------------------------------------------------------------------

    def _bucket_key(self) -> tuple[str, str]:
        bucket, _, prefix = self.dst.root.partition("/")
        return bucket, f"{prefix}/{LEASE_FILE}" if prefix else LEASE_FILE

    def _client(self):
        return self.s3.client(self._bucket_key()[0])

    @staticmethod
    def _precondition_failed(error: Exception) -> bool:
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412")

    def _acquire_s3(self) -> None:
        client, (bucket, key) = self._client(), self._bucket_key()
        try:
            self.etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfNoneMatch="*")["ETag"]
            return
        except Exception as e:
            if not self._precondition_failed(e):
                raise
        try:
            current = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:  # released between our two requests: try once more from the start
            self.etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfNoneMatch="*")["ETag"]
            return
        holder = _parse(current["Body"].read())
        if holder.get("owner") == self.owner:  # our first PUT went through, its answer was lost and retried
            self.etag = current["ETag"]
            return
        if holder.get("expires", 0) > time.time():
            raise LeaseHeldError(_held_message(self.dst, holder))
        try:  # expired: take it over, atomically against another run doing the same
            self.etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfMatch=current["ETag"])["ETag"]
        except Exception as e:
            if self._precondition_failed(e):
                raise LeaseHeldError(_held_message(self.dst, {"what": "another run that just took it over"})) from None
            raise
        log.warning("took over the expired lease of %s", _describe(holder))

    def _renew_s3(self) -> None:
        client, (bucket, key) = self._client(), self._bucket_key()
        try:
            self.etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfMatch=self.etag)["ETag"]
        except Exception as e:
            if not self._precondition_failed(e):
                raise
            self.lost = True

    def _release_s3(self) -> None:
        client, (bucket, key) = self._client(), self._bucket_key()
        client.delete_object(Bucket=bucket, Key=key, IfMatch=self.etag)

    # -- local ---------------------------------------------------------------------------------------------------

    def _path(self) -> str:
        return self.dst.path(LEASE_FILE)

    def _create_local(self) -> bool:
        os.makedirs(os.path.dirname(self._path()), exist_ok=True)
        try:
            fd = os.open(self._path(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._body())
        return True

    def _acquire_local(self) -> None:
        if self._create_local():
            return
        try:
            with open(self._path(), "rb") as f:
                holder = _parse(f.read())
        except FileNotFoundError:
            holder = {}
        if holder.get("expires", 0) > time.time():
            raise LeaseHeldError(_held_message(self.dst, holder))
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._path(), f"{self._path()}.expired-{self.owner}")
            os.unlink(f"{self._path()}.expired-{self.owner}")
        if not self._create_local():
            raise LeaseHeldError(_held_message(self.dst, {"what": "another run that just took it over"}))
        log.warning("took over the expired lease of %s", _describe(holder))

    def _renew_local(self) -> None:
        try:
            with open(self._path(), "rb") as f:
                mine = _parse(f.read()).get("owner") == self.owner
        except FileNotFoundError:
            mine = False
        if not mine:
            self.lost = True
            return
        tmp = f"{self._path()}.{self.owner}.tmp"
        with open(tmp, "wb") as f:
            f.write(self._body())
        os.replace(tmp, self._path())

    def _release_local(self) -> None:
        with open(self._path(), "rb") as f:
            if _parse(f.read()).get("owner") == self.owner:
                os.unlink(self._path())

    # -- both ----------------------------------------------------------------------------------------------------

    def acquire(self) -> Lease:
        (self._acquire_local if self._local else self._acquire_s3)()
        threading.Thread(target=self._heartbeat, name="dagn-lease", daemon=True).start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                (self._renew_local if self._local else self._renew_s3)()
            except Exception as e:  # a transient storage error: the next beat tries again, well within the expiry
                log.warning("could not renew the lease on %s: %s", self.dst.uri, e)
            if self.lost:
                log.error("the lease on %s was taken over by another run: this run no longer holds it", self.dst.uri)
                return

    def release(self) -> None:
        self._stop.set()
        if self.lost:
            return
        try:
            (self._release_local if self._local else self._release_s3)()
        except Exception as e:  # it expires by itself
            log.warning("could not release the lease on %s (it expires by itself): %s", self.dst.uri, e)


def _parse(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}  # unreadable: treated as expired
    return value if isinstance(value, dict) else {}


def _describe(holder: dict) -> str:
    return f"{holder.get('what', 'a run')} (host {holder.get('host', '?')}, pid {holder.get('pid', '?')})"


def _held_message(dst: Location, holder: dict) -> str:
    left = max(0, round(holder.get("expires", time.time()) - time.time()))
    return (
        f"{dst.uri} is in use by {_describe(holder)}; wait for it to finish (if it died, its lease expires in {left} s "
        f"and the next run takes over)"
    )


@contextlib.contextmanager
def hold(dst: Location, s3: S3Settings, *, seconds: float, what: str) -> Iterator[Lease | None]:
    """Hold the lease on ``dst`` for the block (nested holds in one process on one DST are the outer one's).

    Raises:
        LeaseHeldError: when another live run holds it: one line naming that run.
    """
    if dst.uri in _held:
        yield None
        return
    lease = Lease(dst=dst, s3=s3, seconds=seconds, what=what).acquire()
    _held.add(dst.uri)
    try:
        yield lease
    finally:
        _held.discard(dst.uri)
        lease.release()
