"""What a user sees when a command fails: one line that names the problem and what to change, not a traceback.

Exit status 2 means the command was given something wrong (an option, a file, credentials): fix it and run again.
Status 1 means the work itself failed (a disk filled up, a server could not be reached, an input failed).
``--debug`` (or ``DAGN_DEBUG=1``) lets the exception through with its traceback.
"""

from __future__ import annotations

import errno
import os

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from dagn.checkpoint import ModelFileError
from pipeline.storage import redact

__all__ = ["USAGE", "WORK", "DagnGroup", "UserError", "explain", "require_folder"]

USAGE, WORK = 2, 1

# Phrases of S3 errors as pyarrow (AWS SDK for C++) and Ray Data report them.
_REFUSED = (
    "ACCESS_DENIED",
    "AccessDenied",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "response code: 403",
)
_UNREACHABLE = ("NETWORK_CONNECTION", "Could not connect", "curlCode: 7", "Could not resolve")


class UserError(Exception):
    """A mistake the user can fix; the message names the option or file to change (exit status 2)."""


def _s3(text: str) -> tuple[str, int] | None:
    if any(p in text for p in _REFUSED):
        return f"S3 refused the credentials or access: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ({text})", USAGE
    if any(p in text for p in _UNREACHABLE):
        return f"cannot reach S3: check --s3-endpoint / AWS_ENDPOINT_URL ({text})", WORK
    return None


def explain(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception that ended a command."""
    text = redact(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    if isinstance(error, UserError):
        return text, USAGE
    if isinstance(error, ModelFileError):
        return f"{text} (check --weights)", USAGE
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        return f"no space left on the device{where}: free some space or write somewhere else", WORK
    if isinstance(error, ConnectionError):  # from pipeline.ray_session or Ray's own connection failures
        return f"cannot reach the Ray cluster: check --address / RAY_ADDRESS ({text})", WORK
    if isinstance(error, OSError) and (s3 := _s3(str(error))):
        return s3
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return text, USAGE
    if isinstance(error, ValueError):  # the library's checks of what it was given
        return text, USAGE
    return f"{type(error).__name__}: {text} (--debug shows the traceback)", WORK


def _debug(ctx: typer.Context) -> bool:
    flag = ctx.find_root().params.get("debug", False)
    return bool(flag) or os.environ.get("DAGN_DEBUG", "").lower() in ("1", "true", "yes")


class DagnGroup(TyperGroup):
    """The root command group: exceptions of a command become :func:`explain`'s message and exit status."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors and chosen exits: typer reports them
            raise
        except Exception as error:
            if _debug(ctx):
                raise
            message, status = explain(error)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(status) from None


def require_folder(uri: str, option: str) -> None:
    """A local folder given as ``option`` must exist (S3 prefixes are checked by listing them)."""
    if "://" not in uri and not os.path.isdir(uri):
        raise UserError(f"{option} {uri}: no such folder")
