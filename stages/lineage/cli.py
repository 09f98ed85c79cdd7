"""The `lineage` command (mounted as `pipeline lineage`; `python -m stages.lineage`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from stages.lineage.export import export
from stages.lineage.records import RECORDS, append_run_record
from stages.lineage.show import describe, format_show
from stages.lineage.trace import format_trace, trace
from stages.lineage.verify import format_verify, verify
from stages.lineage.why import format_why, why

app = typer.Typer(
    help="Lineage and audit: run records, show, verify, why, trace, export.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("record")
def record_cmd(
    trigger: str = typer.Option("manual", help="What ran the pipeline (e.g. 'dvc repro')."),
    flow_run_id: str = typer.Option(None, help="The Prefect flow-run id, when there is one."),
) -> None:
    """Append a run record for the current state (after a bare `dvc repro`)."""
    rec = append_run_record(".", trigger=trigger, flow_run_id=flow_run_id)
    dirty = " (dirty)" if rec["git"]["dirty"] else ""
    typer.echo(
        f"run {rec['run_id']} recorded in {RECORDS}: commit {(rec['git']['commit'] or '?')[:10]}"
        f"{dirty}, dvc.lock {str(rec['dvc_lock_sha256'])[:12]}, "
        f"stages changed since the last record: {', '.join(rec['ran']) or 'none'}"
    )
    if rec["up_to_date"] is not True:
        typer.secho(
            "warning: the workspace does not match dvc.lock (see `pipeline lineage why`)",
            fg=typer.colors.YELLOW,
            err=True,
        )


@app.command("show")
def show_cmd(
    artefact: str = typer.Argument(None, help="Output path or stage (default: the model)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """The chain of stages that produced an artefact, back to the raw batches."""
    try:
        info = describe(".", artefact)
    except LookupError as e:
        _fail(str(e))
    typer.echo(json.dumps(info, indent=2, default=str) if as_json else format_show(info))


@app.command("verify")
def verify_cmd(
    full: bool = typer.Option(
        False, "--full", help="Also re-check every raw batch's SHA-256 (metrics/ingest.json)."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """Re-hash everything dvc.lock lists and the raw batches; exit 1 on any mismatch."""
    try:
        result = verify(".", full=full)
    except LookupError as e:
        _fail(str(e))
    typer.echo(json.dumps(result, indent=2) if as_json else format_verify(result))
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("why")
def why_cmd(as_json: bool = typer.Option(False, "--json", help="JSON instead of text.")) -> None:
    """For every stage that would rerun now: which input, params key or code file changed."""
    try:
        result = why(".")
    except LookupError as e:
        _fail(str(e))
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_why(result))


@app.command("trace")
def trace_cmd(
    record_id: str = typer.Argument(..., help="A record_id (pseudonymous row key)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """Where a record came from, whether it was quarantined, its split, augmented copies, and
    which runs' models trained on it. Prints no identifier."""
    result = trace(".", record_id)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_trace(result))
    if not result["found"]:
        raise typer.Exit(1)


@app.command("export")
def export_cmd(
    out: Path = typer.Option(None, "--out", help="Archive path (default audit-<time>.tar.gz)."),
) -> None:
    """One archive for an auditor, with a SHA-256 manifest."""
    result = export(".", out)
    typer.echo(f"{result['archive']}: {len(result['members'])} files")
    if result["absent"]:
        typer.echo(f"not produced yet (absent): {', '.join(result['absent'])}")
