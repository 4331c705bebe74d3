"""The ``dagn`` command: the one module that knows every command. Each command lives in its own module under jobs/,
which imports only shared options (:mod:`jobs.options`), the cluster client (:mod:`jobs.ray_client`) and the library."""

from __future__ import annotations

import typer

from jobs import dev, jobs_cmd
from jobs.clean import clean
from jobs.errors import DagnGroup
from jobs.evaluate import evaluate
from jobs.models import models
from jobs.options import Debug
from jobs.publish import publish
from jobs.report import report
from jobs.restore import restore
from jobs.submit import submit
from jobs.train import train

app = typer.Typer(
    name="dagn",
    help="Remove JPEG compression artifacts from image archives with DAGN, locally or on a Ray cluster.",
    no_args_is_help=True,
    cls=DagnGroup,
    pretty_exceptions_show_locals=False,
)
app.command("models")(models)
app.command("restore")(restore)
app.command("evaluate")(evaluate)
app.command("train")(train)
app.command("clean")(clean)
app.command("report")(report)
app.command("publish")(publish)
# Everything after the command name belongs to the submitted command: stop parsing options there.
app.command("submit", context_settings={"allow_interspersed_args": False})(submit)
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(dev.app, name="dev")


@app.callback()
def main(debug: Debug = False) -> None:
    """Remove JPEG compression artifacts from image archives with DAGN, locally or on a Ray cluster."""


if __name__ == "__main__":
    app()
