"""The ``dagn`` command: one typer app; each command group lives in its own module under jobs/."""

from __future__ import annotations

import typer

from jobs.evaluate import evaluate
from jobs.models import models
from jobs.restore import restore
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


@app.callback()
def main() -> None:
    """Remove JPEG compression artifacts from image archives with DAGN, locally or on a Ray cluster."""


if __name__ == "__main__":
    app()
