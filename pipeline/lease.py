"""A lease in DST, so two runs of restore or clean never work on the same destination at once.

Two runs on one DST would restore the same inputs twice and race on the manifest; on a cluster this happens when a
nightly clean outlives its night (a CronJob's ``Forbid`` covers only the pod that creates the RayJob). The lease is
one small JSON file, ``DST/_manifest/lease.json``, that names its holder and when it expires:

* S3: taken with a conditional PUT (``If-None-Match: *``: exactly one of two racing runs gets it), renewed and taken
  over with ``If-Match`` on the ETag last seen, released with a conditional DELETE, so every step is atomic;
* local folders: every read-and-replace of the lease happens under an exclusive ``flock`` on a lock file beside it,
  so two runs that find the same dead lease cannot both take it.

A heartbeat thread renews the lease every third of its time, so a live run keeps it however long it works and a dead
run's lease (killed driver, lost node) expires after ``seconds`` and is then taken over by the next run. A holder on
this very machine (same host name and boot) whose process is gone is dead at once: a rerun after a kill does not
wait out the expiry. The process is named by pid and start time, so a reused pid does not pass for the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

import pyarrow.fs as pafs
from pydantic import Field

from pipeline.storage import Location, S3Settings

__all__ = ["LEASE_FILE", "Lease", "LeaseHeldError", "LeaseSeconds", "hold"]

log = logging.getLogger(__name__)

LEASE_FILE = "_manifest/lease.json"
LeaseSeconds = Annotated[
    float,
    Field(
        ge=5,
        description="Lifetime of the run's lease on DST (renewed every third of it while the run lives): how long a "
        "run killed on another machine keeps the next one out; two runs of restore or clean on one DST never work "
        "at once (see pipeline.lease).",
    ),
]
"""The config field of a lease's lifetime (restore's and clean's)."""
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
                "boot": _BOOT_ID,
                "pid": os.getpid(),
                "started": _start_time(os.getpid()),
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
        if _alive(holder):
            raise LeaseHeldError(_held_message(self.dst, holder))
        try:  # expired: take it over, atomically against another run doing the same
            self.etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfMatch=current["ETag"])["ETag"]
        except Exception as e:
            if self._precondition_failed(e):
                raise LeaseHeldError(_held_message(self.dst, {"what": "another run that just took it over"})) from None
            raise
        log.warning("took over the lease of %s: it expired, or its process on this machine is gone", _describe(holder))

    def _renew_s3(self) -> None:
        client, (bucket, key) = self._client(), self._bucket_key()
        try:
            self.etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfMatch=self.etag)["ETag"]
        except Exception as e:
            if not self._precondition_failed(e):
                raise
            # A retried PUT whose first try went through (its answer lost in a stall) fails its own If-Match: the
            # lease is then still ours, under the ETag of that first try.
            try:
                current = client.get_object(Bucket=bucket, Key=key)
            except client.exceptions.NoSuchKey:
                self.lost = True
                return
            if _parse(current["Body"].read()).get("owner") == self.owner:
                self.etag = current["ETag"]
            else:
                self.lost = True

    def _release_s3(self) -> None:
        client, (bucket, key) = self._client(), self._bucket_key()
        client.delete_object(Bucket=bucket, Key=key, IfMatch=self.etag)

    # -- local ---------------------------------------------------------------------------------------------------

    def _path(self) -> str:
        return self.dst.path(LEASE_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict | None]:
        """The current lease (None if there is none), read under the lock that every local change holds.

        The lock file goes with the lease (see :meth:`_release_local`), so a lock taken on a file that was unlinked
        meanwhile is no lock: it is given up and taken again on the file now at that name.
        """
        os.makedirs(os.path.dirname(self._path()), exist_ok=True)
        while True:
            lock = open(f"{self._path()}.lock", "a")  # noqa: SIM115 (closed below, or by the with)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if os.stat(lock.name).st_ino == os.fstat(lock.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            lock.close()
        with lock:
            try:
                with open(self._path(), "rb") as f:
                    holder = _parse(f.read())
            except FileNotFoundError:
                holder = None
            yield holder

    def _write_local(self) -> None:
        tmp = f"{self._path()}.{self.owner}.tmp"
        with open(tmp, "wb") as f:
            f.write(self._body())
        os.replace(tmp, self._path())

    def _acquire_local(self) -> None:
        with self._locked() as holder:
            if holder is not None and _alive(holder):
                raise LeaseHeldError(_held_message(self.dst, holder))
            self._write_local()
        if holder is not None:
            log.warning("took over the lease of %s: it expired, or its process is gone", _describe(holder))

    def _renew_local(self) -> None:
        with self._locked() as holder:
            self.lost = (holder or {}).get("owner") != self.owner
            if not self.lost:
                self._write_local()

    def _release_local(self) -> None:
        with self._locked() as holder:
            if (holder or {}).get("owner") == self.owner:
                os.unlink(self._path())
                os.unlink(f"{self._path()}.lock")  # under the lock: the next run makes a new one

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


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


_BOOT_ID = _boot_id()


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the lease's holder may still be working: not expired, and not a process of this machine that is gone."""
    if holder.get("expires", 0) <= time.time():
        return False
    same_machine = _BOOT_ID is not None and (holder.get("host"), holder.get("boot")) == (socket.gethostname(), _BOOT_ID)
    pid = holder.get("pid")
    if not same_machine or not isinstance(pid, int) or "started" not in holder:
        return True
    return _start_time(pid) == holder["started"]


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
