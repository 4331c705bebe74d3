"""``dagn submit``: run any dagn command as a Ray job on a cluster, shipping this project as the job's working_dir.

The entrypoint is ``python -m jobs.cli <command> <args>`` run inside the uploaded copy of the project, so the job
runs the code you have here (not whatever version the cluster image carries); the cluster only needs the
dependencies (ray-cluster.yaml and infra/Dockerfile install them). The command and its options are parsed here
first, so a typo fails before anything is uploaded.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.markup import escape

from jobs.options import ConfigFile, JobApiAddress, TokenFile
from jobs.ray_client import ClusterError, connect, follow, scrub
from jobs.settings import load_settings

__all__ = ["DEFAULT_EXCLUDES", "SubmitSettings", "check_command", "entrypoint_for", "runtime_env_for", "submit"]

# Never uploaded, whatever .gitignore says (Ray also honours every .gitignore below the working dir).
DEFAULT_EXCLUDES = (
    ".git",
    ".venv",
    "venv",
    "runs",
    "out",
    "data",
    "build",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
)
# Commands that talk to a cluster or run a local server themselves: submitting them makes no sense.
NOT_SUBMITTABLE = {"submit", "jobs", "dev"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def project_root() -> Path:
    """The folder holding this project's pyproject.toml (what gets shipped)."""
    return Path(__file__).resolve().parents[1]


class SubmitSettings(BaseModel):
    """How a command becomes a Ray job. A YAML file given with --config may hold any of these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(None, description="Ray job API / dashboard URL, http://HEAD:8265 (or RAY_ADDRESS).")
    working_dir: Path = Field(default_factory=project_root, description="Folder uploaded as the job's working_dir.")
    excludes: tuple[str, ...] = Field((), description="More paths / patterns to leave out of the upload.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the job (values are never printed)."
    )
    pip: tuple[str, ...] = Field((), description="Extra pip requirements installed for the job by Ray.")
    num_cpus: float = Field(0.0, ge=0, description="CPUs reserved for the job's driver (0: it may run on the head).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved for the job's driver (its workers ask for theirs).")
    submission_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="Job id (default: Ray's).")
    wait: bool = Field(True, description="Stream the logs and wait for the end (exit status = the job's).")
    token_file: Path | None = Field(None, description="File holding the cluster token (default: RAY_AUTH_TOKEN...).")

    @field_validator("working_dir")
    @classmethod
    def _is_project(cls, value: Path) -> Path:
        value = value.expanduser().resolve()
        if not (value / "jobs" / "cli.py").is_file():
            raise ValueError(f"{value} does not hold the dagn project (no jobs/cli.py)")
        return value

    @field_validator("env")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(bad)}")
        return value


def parse_env(items: list[str] | None) -> dict[str, str] | None:
    """``--env NAME=VALUE`` or ``--env NAME`` (the value is copied from this shell, so secrets stay off the command
    line); a NAME that is not set here is an error."""
    if not items:
        return None
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                raise typer.BadParameter(f"--env {name}: not set in this environment (give NAME=VALUE)")
            value = os.environ[name]
        env[name] = value
    return env


def check_command(group: typer.core.TyperGroup, command: str, args: list[str]) -> None:
    """Parse ``dagn <command> <args>`` here with the real command definitions (``group``: the root command), without
    running it."""
    context = typer.Context(group)
    submittable = sorted(n for n in group.list_commands(context) if n not in NOT_SUBMITTABLE)
    if command not in submittable:
        raise typer.BadParameter(f"{command!r} cannot be submitted; choose one of: {', '.join(submittable)}")
    if "--help" in args:
        raise typer.BadParameter(f"run `dagn {command} --help` locally to see its options")
    cmd = group.get_command(context, command)
    try:
        with cmd.make_context(f"dagn {command}", list(args)):
            pass
    except Exception as e:  # typer's (vendored) click UsageError family: they all format a message
        if not hasattr(e, "format_message"):
            raise
        raise typer.BadParameter(f"dagn {command}: {e.format_message()}") from None


def entrypoint_for(command: str, args: list[str]) -> str:
    return shlex.join(["python", "-m", "jobs.cli", command, *args])


def runtime_env_for(settings: SubmitSettings) -> dict[str, Any]:
    env: dict[str, Any] = {
        "working_dir": str(settings.working_dir),
        "excludes": [*DEFAULT_EXCLUDES, *settings.excludes],
    }
    if settings.env:
        env["env_vars"] = dict(settings.env)
    if settings.pip:
        env["pip"] = list(settings.pip)
    return env


def submit(
    ctx: typer.Context,
    command: Annotated[str, typer.Argument(help="The dagn command to run: restore, train, evaluate, clean, models.")],
    args: Annotated[
        list[str] | None, typer.Argument(help="Its arguments and options, exactly as for running it locally.")
    ] = None,
    address: JobApiAddress = None,
    wait: Annotated[
        bool | None, typer.Option("--wait/--no-wait", help="Stream the logs until the job ends (default) or return.")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(help="NAME=VALUE, or NAME to copy its value from here, for the job's environment. Repeatable."),
    ] = None,
    working_dir: Annotated[Path | None, typer.Option(help="Project folder to upload (default: this one).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Also leave this path/pattern out. Repeatable.")] = None,
    pip: Annotated[list[str] | None, typer.Option(help="Extra pip requirement for the job. Repeatable.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="CPUs for the job's driver (default 0).")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="GPUs for the job's driver (default 0).")] = None,
    submission_id: Annotated[str | None, typer.Option(help="Choose the job id (default: Ray makes one).")] = None,
    token_file: TokenFile = None,
    config: ConfigFile = None,
) -> None:
    """Run a dagn command as a Ray job: dagn submit --address http://HEAD:8265 restore s3://in s3://out.

    Everything after the command name belongs to the command; it is checked here before anything is uploaded.

    This project is uploaded as the job's working directory: relative paths in the arguments mean project files.

    The job's environment gets only what --env passes (on clusters S3 keys come from the nodes' role or a secret).

    Waiting, the exit status is the job's; Ctrl-C stops waiting, not the job (see dagn jobs stop).
    """
    args = list(args or [])
    if args[:1] == ["--"]:
        args = args[1:]
    settings = load_settings(
        SubmitSettings,
        config,
        address=address,
        wait=wait,
        env=parse_env(env),
        working_dir=working_dir,
        excludes=tuple(exclude) if exclude else None,
        pip=tuple(pip) if pip else None,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        submission_id=submission_id,
        token_file=token_file,
    )
    check_command(ctx.find_root().command, command, args)
    console = Console(stderr=True, highlight=False)
    client, token = connect(settings.address, settings.token_file)
    entrypoint = entrypoint_for(command, args)
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env_for(settings),
            submission_id=settings.submission_id,
            entrypoint_num_cpus=settings.num_cpus or None,
            entrypoint_num_gpus=settings.num_gpus or None,
            metadata={"dagn_command": command},
        )
    except Exception as e:  # the SDK raises bare RuntimeError/ValueError with the server's message
        raise ClusterError(f"the cluster refused the job: {scrub(str(e), token)}") from None
    console.print(f"submitted [bold]{escape(job_id)}[/bold]: {escape(entrypoint)}", markup=True)
    if not settings.wait:
        typer.echo(job_id)
        console.print(f"follow it with: dagn jobs logs {job_id} --follow")
        return
    status = follow(client, job_id, token)
    console.print(f"job {job_id} {status.value}")
    raise typer.Exit(0 if status.value == "SUCCEEDED" else 1)
