"""``dagn dev s3`` and ``dagn dev ray``: local servers for development, on loopback, until Ctrl-C.

``dev s3`` runs SeaweedFS (a real S3 server) with fixed development keys; printing those is fine, they open nothing
but a server on 127.0.0.1. ``dev ray`` runs a Ray head with token auth; it prints where the token file is, never
the token.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(name="dev", help="Local development servers (S3, Ray) on 127.0.0.1.", no_args_is_help=True)


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command("s3")
def s3(
    folder: Annotated[
        Path, typer.Option("--dir", help="Where the server keeps its data and logs (kept between runs).")
    ] = Path("data/dev-s3"),
    port: Annotated[int, typer.Option(help="S3 port on 127.0.0.1 (0: any free port).")] = 8333,
    bucket: Annotated[list[str] | None, typer.Option(help="Create this bucket (repeatable).")] = None,
) -> None:
    """Run a local S3 server (SeaweedFS) and print the variables that point boto3, pyarrow, Ray and dagn at it."""
    from jobs.local_s3 import LocalS3, _is_free

    if port and not _is_free(port):
        raise typer.BadParameter(f"port {port} on 127.0.0.1 is taken; pass --port 0 for any free one")
    server = LocalS3(folder.resolve(), port=port)
    server.start()
    try:
        existing = set()
        if bucket:
            import boto3

            client = boto3.client(
                "s3",
                endpoint_url=server.endpoint,
                aws_access_key_id=server.access_key,
                aws_secret_access_key=server.secret_key,
                region_name=server.region,
            )
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for name in bucket:
                if name not in existing:
                    client.create_bucket(Bucket=name)
        typer.echo(f"# S3 server on {server.endpoint} (data in {server.folder}); development keys only")
        for name, value in server.env().items():
            typer.echo(f"export {name}={value}")
        for name in bucket or []:
            typer.echo(f"# bucket s3://{name}" + (" (existing)" if name in existing else " (created)"))
        typer.echo("# Ctrl-C stops the server", err=True)
        _wait_for_signal()
    finally:
        server.stop()
    typer.echo("# S3 server stopped", err=True)


@app.command("ray")
def ray_head(
    folder: Annotated[Path, typer.Option("--dir", help="Where the token file and the head's output go.")] = Path(
        "data/dev-ray"
    ),
    num_cpus: Annotated[int, typer.Option(help="CPUs the head offers to jobs.")] = 2,
    token_auth: Annotated[bool, typer.Option("--token/--no-token", help="Token authentication (default on).")] = True,
) -> None:
    """Run a local Ray head (dashboard and job API on 127.0.0.1) for trying `dagn submit` and `dagn jobs`."""
    from jobs.local_ray import LocalRayHead

    head = LocalRayHead(folder.resolve(), num_cpus=num_cpus, token_auth=token_auth)
    typer.echo("# starting a Ray head on 127.0.0.1 ...", err=True)
    head.start()
    try:
        typer.echo(f"# Ray head up: dashboard and job API on {head.address}")
        for name, value in head.env().items():
            typer.echo(f"export {name}={value}")
        typer.echo("# Ctrl-C stops the head", err=True)
        _wait_for_signal()
    finally:
        head.stop()
    typer.echo("# Ray head stopped", err=True)
