"""The `pipeline` command: the project's entry points in one place.

Commands whose modules import heavy libraries (pandas, pyarrow, torch, DVC) are loaded only when
they run, so `pipeline --help` answers at once: `LAZY` names each with its one-line help.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
from typer.core import TyperGroup

# name: (module, attribute: a command function or a Typer app, its help line for `--help`;
# tests/test_cli_lazy.py checks that the line is the command's own)
LAZY = {
    "predict": (
        "stages.predict",
        "predict",
        "Predict classes and probabilities for new records, prepared exactly as training data was.",
    ),
    "forget": (
        "stages.forget",
        "forget",
        "Erase a batch: its file, its cached partition results and DVC objects, then rerun.",
    ),
    "lineage": (
        "stages.lineage",
        "app",
        "Lineage and audit: run records, show, verify, why, trace, export.",
    ),
}


class LazyGroup(TyperGroup):
    """A command group that imports a LAZY command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *LAZY]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY:  # for listing in --help: the help line, no import
            return click.Command(name, help=LAZY[name][2], short_help=LAZY[name][2])
        return super().get_command(ctx, name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in LAZY:
            return args[0], load_command(args[0]), args[1:]
        return super().resolve_command(ctx, args)


def load_command(name: str) -> click.Command:
    """Import a LAZY command's module and build its click command."""
    module, attr, _ = LAZY[name]
    obj = getattr(importlib.import_module(module), attr)
    if not isinstance(obj, typer.Typer):
        function, obj = obj, typer.Typer()
        obj.command(name)(function)
    command = typer.main.get_command(obj)
    command.name = name
    # Shell completion belongs to the top-level `pipeline` only.
    command.params = [p for p in command.params if p.name not in _COMPLETION]
    return command


_COMPLETION = ("install_completion", "show_completion")


app = typer.Typer(
    cls=LazyGroup, help="Reproducible, privacy-safe ML pipeline.", no_args_is_help=True
)


@app.command("demo-key")
def demo_key() -> None:
    """Create a random local DEMO pseudonymisation key in a git-ignored file (never for real
    data). The bundled sample needs none: it runs under the published demo key."""
    from stages.lib.keys import KEY_ENV, create_demo_key

    path = create_demo_key()
    typer.secho(
        f"WARNING: a random DEMO key is at {path} (git-ignored); every stage now uses it when "
        f"{KEY_ENV} is unset. It is not for real data: set {KEY_ENV} from a secret store.",
        fg=typer.colors.YELLOW,
        err=True,
    )


@app.command("init")
def init(
    file: str = typer.Argument(..., help="The table to describe (csv, tsv, jsonl, parquet; .gz)"),
    label: str = typer.Option(None, help="The label column (default: guessed, and said so)"),
    columns: str = typer.Option(None, help="a,b,...: the columns of a file without a header"),
    format: str = typer.Option(None, help="csv|tsv|jsonl|parquet when the extension does not say"),
    force: bool = typer.Option(False, help="Overwrite a params.yaml that differs from git's"),
    rows: int = typer.Option(50_000, min=1, help="Rows read from the start of a large file"),
) -> None:
    """Profile FILE and write params.yaml (schema, policies, bounds) and dvc.yaml's ingest deps
    for it, each inferred line with a comment saying why; then `make run`."""
    from stages.init import run_init
    from stages.lib.errors import run_stage

    run_stage(lambda: run_init(file, label, columns, format, force, rows))


@app.command()
def repro(targets: list[str] = typer.Argument(None), force: bool = False) -> None:
    """Reproduce the pipeline (or the given stages) stage by stage, then append a run record.

    Exits with a failing stage's own code (2 bad input, 3 gate, 74/75 I/O) and puts its
    previous outputs back."""
    from stages.lineage import repro_and_record

    sys.exit(repro_and_record(targets, force))


@app.command("add-batch")
def add_batch(path: str = typer.Argument(..., help="A batch file, or a glob of them")) -> None:
    """Bring a new batch under DVC in data/incoming (an identical batch is skipped)."""
    from stages.add_batch import add_batch as add
    from stages.lib.errors import run_stage

    def main() -> None:
        # run_stage: a missing path, no data file or a read-only folder is a message, no traceback
        added = add(".", path)
        for p in added:
            typer.echo(f"added {p} (tracked by DVC); run `pipeline repro` to process it")
        if not added:
            typer.echo(f"nothing new: every data file of {path} is already in data/incoming")

    run_stage(main)


if __name__ == "__main__":
    app()
