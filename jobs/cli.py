"""The ``dagn`` command: one typer app; each command group lives in its own module under jobs/."""

from __future__ import annotations

import typer

from jobs import dev, jobs_cmd
from jobs.clean import clean
from jobs.evaluate import evaluate
from jobs.models import models
from jobs.publish import publish
from jobs.restore import restore
from jobs.submit import submit
from jobs.train import train

app = typer.Typer(
    name="dagn",
    help="Remove JPEG compression artifacts from image archives with DAGN, locally or on a Ray cluster.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("models")(models)
app.command("restore")(restore)
app.command("evaluate")(evaluate)
app.command("train")(train)
app.command("clean")(clean)
app.command("publish")(publish)
# Everything after the command name belongs to the submitted command: stop parsing options there.
app.command("submit", context_settings={"allow_interspersed_args": False})(submit)
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(dev.app, name="dev")


@app.callback()
def main() -> None:
    """Remove JPEG compression artifacts from image archives with DAGN, locally or on a Ray cluster."""


if __name__ == "__main__":
    app()
