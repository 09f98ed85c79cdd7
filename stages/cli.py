"""The `pipeline` command: the project's entry points in one place."""

from __future__ import annotations

import sys

import typer

from stages import forget, lineage, predict

app = typer.Typer(help="Reproducible, privacy-safe ML pipeline.", no_args_is_help=True)
app.add_typer(lineage.app, name="lineage")
app.command("predict")(predict.predict)
app.command("forget")(forget.forget)


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
    """Run `dvc repro` (the whole pipeline or the given stages) and append a run record."""
    sys.exit(lineage.repro_and_record(targets, force))


@app.command("add-batch")
def add_batch(path: str = typer.Argument(..., help="A batch file, or a glob of them")) -> None:
    """Bring a new batch under DVC in data/incoming (an identical batch is skipped)."""
    from flows.new_data import add_batch as add

    added = add(".", path)
    for p in added:
        typer.echo(f"added {p} (tracked by DVC); run `pipeline repro` to process it")
    if not added:
        typer.echo(f"nothing new: every file of {path} is already in data/incoming")


if __name__ == "__main__":
    app()
