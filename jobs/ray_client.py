"""Talking to a Ray cluster's job API: where it is, Ray 2.60's token authentication, and following a job.

The address is the dashboard URL (``http://HEAD:8265``) from ``--address``, ``RAY_API_SERVER_ADDRESS`` or
``RAY_ADDRESS``. The token is found where Ray's own clients look, in the same order: the ``RAY_AUTH_TOKEN`` variable,
the file named by ``--token-file`` / ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token`` (skipped when
``RAY_AUTH_MODE=disabled``). It is sent as a bearer header and never printed: it lives in a ``SecretStr`` and every
message that leaves this module passes :func:`scrub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import SecretStr
from rich.console import Console

from pipeline.storage import redact

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

__all__ = ["ClusterError", "connect", "find_token", "follow", "job_status", "normalise_address", "scrub"]

DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")


class ClusterError(typer.BadParameter):
    """The cluster cannot be reached or refuses us; the message says what to do and holds no secret."""


def normalise_address(address: str | None) -> str:
    """``http://HEAD:8265`` from what a user may give: a URL, or ``HEAD:PORT`` (taken as http)."""
    if not address or not address.strip():
        raise ClusterError(
            "no Ray cluster address: give --address http://HEAD:8265 or set RAY_ADDRESS (the dashboard / job API URL)"
        )
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise ClusterError(f"{address} is a Ray Client address; give the dashboard URL instead, http://HEAD:8265")
    if address in ("auto", "local"):
        raise ClusterError(f"address {address!r} names no job API; give http://HEAD:8265")
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise ClusterError(f"unsupported address {address}: use http://HEAD:8265 or https://...")
    return address


def find_token(token_file: Path | None = None) -> SecretStr | None:
    """The cluster token, or None when there is none to send (a cluster without token auth)."""
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return SecretStr(value)
    from_env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    explicit = token_file or (Path(from_env) if from_env else None)
    if explicit is not None:
        path = explicit.expanduser()
        try:
            value = path.read_text().strip()
        except OSError as e:
            raise ClusterError(f"cannot read the Ray token file {path}: {e.strerror}") from None
        if not value:
            raise ClusterError(f"the Ray token file {path} is empty")
        return SecretStr(value)
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    default = DEFAULT_TOKEN_FILE.expanduser()
    if default.is_file():
        value = default.read_text().strip()
        return SecretStr(value) if value else None
    return None


def scrub(text: str, token: SecretStr | None = None) -> str:
    """``text`` without the token or AWS credential values (for anything printed or logged)."""
    text = redact(text)
    for secret in (token.get_secret_value() if token else None, os.environ.get("RAY_AUTH_TOKEN")):
        if secret:
            text = text.replace(secret, "***")
    return text


def connect(address: str | None, token_file: Path | None = None) -> tuple[JobSubmissionClient, SecretStr | None]:
    """A job client for the cluster at ``address`` (checked: the request for its version must succeed)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = normalise_address(address)
    token = find_token(token_file)
    headers = {"Authorization": "Bearer " + token.get_secret_value()} if token else {}
    try:
        return JobSubmissionClient(url, headers=headers), token
    except AuthenticationError as e:
        hint = (
            "the token was refused: check RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / --token-file"
            if token
            else "the cluster needs a token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH / --token-file to its file"
        )
        raise ClusterError(f"{url}: {hint} ({scrub(str(e).splitlines()[0], token)})") from None
    except (ConnectionError, OSError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot reach the Ray job API at {url}: {scrub(str(e), token)}") from None


def job_status(client: JobSubmissionClient, job_id: str):
    """The job's :class:`ray.job_submission.JobStatus`."""
    from ray.job_submission import JobStatus

    return JobStatus(client.get_job_status(job_id))


def follow(client: JobSubmissionClient, job_id: str, token: SecretStr | None = None):
    """Print the job's logs as they come until it ends; returns its final ``JobStatus``. Ctrl-C detaches."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(scrub(chunk, token))
            sys.stdout.flush()

    try:
        with contextlib.suppress(RuntimeError):  # the log socket closed early (e.g. no driver started): poll below
            asyncio.run(tail())
        while not (status := job_status(client, job_id)).is_terminal():
            time.sleep(1)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"\nstopped waiting; the job goes on. Stop it with: dagn jobs stop {job_id}")
        raise typer.Exit(130) from None
    if status.value != "SUCCEEDED":
        info = client.get_job_info(job_id)
        if info.message:
            Console(stderr=True, highlight=False).print(scrub(info.message.splitlines()[0], token), markup=False)
    return status
