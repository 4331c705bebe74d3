"""Two runs on one DST never work at once: a lease in DST, on a local folder and on the real SeaweedFS server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from pipeline import lease as lease_module
from pipeline.lease import LEASE_FILE, Lease, LeaseHeldError, hold
from pipeline.storage import S3Settings, read_bytes, resolve, write_bytes_atomic


@pytest.fixture(params=["local", "s3"])
def dst(request, tmp_path):
    if request.param == "local":
        return resolve(str(tmp_path / "dst"))
    return resolve(f"s3://{request.getfixturevalue('s3_bucket')}/dst")


def _exists(location) -> bool:
    return location.fs.get_file_info(location.path(LEASE_FILE)).size is not None


def test_a_second_holder_is_refused_until_the_first_lets_go(dst):
    with hold(dst, S3Settings(), seconds=60, what="dagn restore first") as lease:
        assert lease is not None and _exists(dst)
        with pytest.raises(LeaseHeldError, match="in use by dagn restore first") as refused:
            Lease(dst=dst, s3=S3Settings(), seconds=60, what="second").acquire()
        assert "\n" not in str(refused.value)
        with hold(dst, S3Settings(), seconds=60, what="nested") as inner:  # clean's own restore step
            assert inner is None
    assert not _exists(dst)
    with hold(dst, S3Settings(), seconds=60, what="third"):
        pass


def test_a_dead_runs_lease_expires_and_a_live_one_is_renewed(dst):
    dead = {"owner": "x", "what": "a killed run", "host": "h", "pid": 1, "expires": time.time() - 1}
    write_bytes_atomic(dst.fs, dst.path(LEASE_FILE), json.dumps(dead).encode())
    live = Lease(dst=dst, s3=S3Settings(), seconds=1.5, what="live").acquire()  # takes the expired one over
    try:
        time.sleep(2.5)  # past its first expiry: the heartbeat renewed it
        with pytest.raises(LeaseHeldError, match="in use by live"):
            Lease(dst=dst, s3=S3Settings(), seconds=1.5, what="late").acquire()
        assert json.loads(read_bytes(dst.fs, dst.path(LEASE_FILE)))["owner"] == live.owner and not live.lost
    finally:
        live.release()
    assert not _exists(dst)


def test_a_killed_holder_on_this_machine_is_taken_over_before_its_lease_expires(dst):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    started = lease_module._start_time(gone.pid)
    gone.wait()
    here = {"host": socket.gethostname(), "boot": lease_module._BOOT_ID, "expires": time.time() + 300}
    holders = {
        "killed": {**here, "pid": gone.pid, "started": started},  # its pid is gone
        "reused pid": {**here, "pid": 1, "started": "0"},  # pid 1 lives, but is not the process that took the lease
        "elsewhere": {**here, "host": "another-host", "pid": gone.pid, "started": started},
    }
    for what, holder in holders.items():
        write_bytes_atomic(dst.fs, dst.path(LEASE_FILE), json.dumps({**holder, "what": what}).encode())
        if what == "elsewhere":  # another machine's process cannot be checked from here: it waits for the expiry
            with pytest.raises(LeaseHeldError, match="in use by elsewhere"):
                Lease(dst=dst, s3=S3Settings(), seconds=60, what="next").acquire()
            continue
        Lease(dst=dst, s3=S3Settings(), seconds=60, what="next").acquire().release()
        assert not _exists(dst), what


def test_a_renewal_retried_after_its_first_try_went_through_keeps_the_lease(s3_bucket):
    """In an S3 stall a renewal's first PUT can land while its answer is lost: the retry then fails its own If-Match.
    The lease is still this run's; only another owner's lease means it is lost."""
    dst = resolve(f"s3://{s3_bucket}/dst")
    lease = Lease(dst=dst, s3=S3Settings(), seconds=60, what="stalled").acquire()
    try:
        landed = json.dumps({**json.loads(read_bytes(dst.fs, dst.path(LEASE_FILE))), "renewed": time.time()})
        write_bytes_atomic(dst.fs, dst.path(LEASE_FILE), landed.encode())  # the first try: a new ETag
        lease._renew_s3()
        assert not lease.lost
        lease._renew_s3()  # and the ETag it adopted is the one that renews
        assert not lease.lost
        other = {"owner": "another", "what": "x", "expires": time.time() + 60}
        write_bytes_atomic(dst.fs, dst.path(LEASE_FILE), json.dumps(other).encode())
        lease._renew_s3()
        assert lease.lost
    finally:
        lease.release()


def test_of_runs_racing_for_a_dead_lease_exactly_one_takes_it(tmp_path):
    dst = resolve(str(tmp_path / "dst"))
    dead = {"owner": "x", "what": "a killed run", "host": "h", "pid": 1, "expires": time.time() - 1}
    write_bytes_atomic(dst.fs, dst.path(LEASE_FILE), json.dumps(dead).encode())
    won, refused, start = [], [], threading.Barrier(8)

    def race() -> None:
        start.wait()
        try:
            won.append(Lease(dst=dst, s3=S3Settings(), seconds=60, what="racer").acquire())
        except LeaseHeldError:
            refused.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    assert json.loads(read_bytes(dst.fs, dst.path(LEASE_FILE)))["owner"] == won[0].owner
    won[0].release()


@pytest.mark.slow
def test_a_second_concurrent_restore_or_clean_is_refused_with_one_line(ray_local, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    first = Lease(dst=resolve(str(out)), s3=S3Settings(), seconds=60, what="dagn restore (the first run)").acquire()
    try:
        for command in ("restore", "clean"):
            result = CliRunner().invoke(app, [command, str(src), str(out)])
            assert result.exit_code == 2, result.output
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "is in use by dagn restore (the first run)" in errors[0], result.output
            assert errors[0].endswith("the next run takes over)") and "Traceback" not in result.output
    finally:
        first.release()
    assert sorted(p.name for p in out.rglob("*")) == ["_manifest"]  # nothing written by the refused runs
