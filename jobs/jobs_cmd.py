"""``dagn jobs list|status|logs|stop``: the Ray jobs of a cluster (any job, not only those dagn submitted).

Job details are shown without secrets: environment variables of a job's runtime_env appear by name only.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.options import JobApiAddress as Address
from jobs.options import TokenFile
from jobs.ray_client import ClusterError, connect, follow, job_status, scrub

__all__ = ["app", "job_view"]

app = typer.Typer(
    name="jobs",
    help="List, inspect, follow and stop the Ray jobs of a cluster.",
    no_args_is_help=True,
)

JobId = Annotated[str, typer.Argument(help="Submission id (raysubmit_...) or job id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _time(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: int | None, end: int | None) -> str:
    if not start:
        return ""
    seconds = ((end or time.time() * 1000) - start) / 1000
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def job_view(job: Any, token=None) -> dict[str, Any]:
    """The fields worth showing of a ``JobDetails``, secrets removed (env var values, token, AWS keys)."""
    runtime_env = dict(job.runtime_env or {})
    if "env_vars" in runtime_env:
        runtime_env["env_vars"] = sorted(runtime_env["env_vars"])  # names only
    from ray.job_submission import JobStatus

    view = {
        "id": job.submission_id or job.job_id,
        "job_id": job.job_id,
        "status": JobStatus(job.status).value,
        "entrypoint": job.entrypoint,
        "start": _time(job.start_time),
        "end": _time(job.end_time),
        "duration": _duration(job.start_time, job.end_time),
        "message": job.message or "",
        "error_type": job.error_type or "",
        "metadata": job.metadata or {},
        "runtime_env": runtime_env,
    }
    return json.loads(scrub(json.dumps(view), token))


@app.command("list")
def list_jobs(address: Address = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """All jobs of the cluster, newest first."""
    client, token = connect(address, token_file)
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0, reverse=True)
    views = [job_view(j, token) for j in jobs]
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    table = Table("id", "status", "start (UTC)", "duration", "entrypoint")
    for v in views:
        table.add_row(*(escape(x) for x in (v["id"], v["status"], v["start"], v["duration"], v["entrypoint"][:80])))
    Console().print(table)


def _info(client, job_id: str, token):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        raise ClusterError(f"no job {job_id} on this cluster ({scrub(str(e), token).splitlines()[0]})") from None


@app.command()
def status(job_id: JobId, address: Address = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Status, times, entrypoint, message and runtime environment (variable names only) of one job."""
    client, token = connect(address, token_file)
    view = job_view(_info(client, job_id, token), token)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    console = Console(highlight=False)
    for key in ("id", "status", "entrypoint", "start", "end", "duration", "error_type", "message"):
        if view[key]:
            value = view[key] if key != "message" else view[key].splitlines()[0]
            console.print(f"[bold]{key:>11}[/bold]  {escape(str(value))}", markup=True)
    if view["runtime_env"]:
        console.print(f"[bold]{'runtime_env':>11}[/bold]  {escape(json.dumps(view['runtime_env']))}", markup=True)


@app.command()
def logs(
    job_id: JobId,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    address: Address = None,
    token_file: TokenFile = None,
) -> None:
    """The job's driver output so far (with --follow: streamed until the job ends; exit status = the job's)."""
    client, token = connect(address, token_file)
    _info(client, job_id, token)
    if follow_:
        final = follow(client, job_id, token)
        raise typer.Exit(0 if final.value == "SUCCEEDED" else 1)
    typer.echo(scrub(client.get_job_logs(job_id), token), nl=False)


@app.command()
def stop(
    job_id: JobId,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the job has stopped.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it.")] = 60.0,
    address: Address = None,
    token_file: TokenFile = None,
) -> None:
    """Stop a running job (its driver gets SIGTERM, then SIGKILL)."""
    client, token = connect(address, token_file)
    from ray.job_submission import JobStatus

    current = JobStatus(_info(client, job_id, token).status)
    if current.is_terminal():
        typer.echo(f"job {job_id} already {current.value}")
        return
    client.stop_job(job_id)
    if not wait:
        typer.echo(f"job {job_id}: stop requested")
        return
    deadline = time.monotonic() + timeout
    while not (current := job_status(client, job_id)).is_terminal():
        if time.monotonic() > deadline:
            typer.echo(f"job {job_id} still {current.value} after {timeout:.0f} s", err=True)
            raise typer.Exit(1)
        time.sleep(0.5)
    typer.echo(f"job {job_id} {current.value}")
