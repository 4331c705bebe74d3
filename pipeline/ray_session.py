"""Joining Ray: the one place a dagn process connects to a cluster or starts its own."""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["start_ray"]


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once on a HOST:PORT nobody answers on: ``ray.init`` would retry for minutes, logging as it goes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {address} ({e.strerror or e})") from None


def start_ray(address: str | None = None, *, quiet: bool = False, object_store_bytes: int | None = None) -> None:
    """Join the cluster at ``address`` (or RAY_ADDRESS, which a Ray job sets), else start a local Ray that ends
    with this process; nothing if Ray is already connected.

    Args:
        address: a Ray cluster address; ``None`` joins RAY_ADDRESS or starts a local one. Never Ray's own default:
            with no address Ray joins whatever cluster ``ray start`` last left running on the machine.
        quiet: leave the workers' output and Ray Data's progress bars off the terminal (the CLI shows its own).
        object_store_bytes: object store size of a local Ray (default: Ray's, a share of the machine's memory).
    """
    import ray
    from ray.data import DataContext

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    local = address == "local"
    if not local:
        _check_reachable(address)  # also when Ray is already up here: a mistyped --address is an error, not ignored
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False if local else None,
            object_store_memory=object_store_bytes if local else None,
            # no dashboard on a local Ray, so no state API either: see pipeline.ray_tweaks
            runtime_env={"worker_process_setup_hook": "pipeline.ray_tweaks.quiet_state_api_warnings"}
            if local
            else None,
            log_to_driver=not quiet,
            logging_level=logging.WARNING if quiet else logging.INFO,
        )
    if quiet:
        DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know
