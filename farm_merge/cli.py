"""The ``farm-merge`` command line: each command parses its options, calls one library
function, and turns a :class:`~farm_merge.errors.FarmMergeError` into a one-line error."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__, consolidate, inplace, migrations, samples
from .errors import FarmMergeError
from .output import format_table, human_bytes, to_json


def reports_errors(func):
    """Turn library errors into ``Error: …`` and exit status 1, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FarmMergeError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="farm-merge")
def cli() -> None:
    """Consolidate AgentFarm per-run SQLite files into one experiment database per
    experiment, and keep its schema current."""


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--into", "target", required=True, help="Experiment database to merge into (created if new).")
@click.option("--experiment-id", help="Experiment the simulations belong to [default: the target's file stem].")
@click.option("--name", help="Human-readable experiment name.")
@click.option("--description", help="What the experiment is about.")
@click.option("--id-template", help="How a simulation id is made from a source path: "
              "{stem}, {parent}, {relpath}, {simulation_id}, {era} [default: the id the file records, else {stem}].")
@click.option("--dry-run", is_flag=True, help="Plan and report; write nothing.")
@click.option("--replace", is_flag=True, help="Re-merge a simulation whose source changed, replacing its rows.")
@click.option("--verify", is_flag=True, help="Also compare a content checksum of every table.")
@click.option("--include-active", is_flag=True, help="Merge sources that a process may still be writing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary table; only errors.")
@reports_errors
def merge(sources, target, experiment_id, name, description, id_template, dry_run, replace, verify,
          include_active, as_json, quiet) -> None:
    """Merge per-run .db files (paths or globs; ** is recursive) into one experiment database.

    \b
    Every row lands under its simulation's id; sources are never modified.
    Identical sources already merged are skipped, so re-running is safe.
    Exit status: 0 if every source merged or was skipped, 1 if any failed.

    \b
    Example:
      farm-merge merge 'runs/**/*.db' --into experiments/exp_001.db --name "LR sweep"
    """
    report = consolidate.merge(
        sources, target, experiment_id=experiment_id, name=name, description=description,
        id_template=id_template, dry_run=dry_run, replace=replace, verify=verify,
        include_active=include_active, progress=False if quiet or as_json else None,
    )
    if as_json:
        click.echo(to_json(report.to_dict()))
    elif not quiet:
        click.echo(render_merge_report(report))
    else:
        for failed in report.failed:
            click.echo(f"failed: {failed.path}: {failed.reason}", err=True)
    sys.exit(report.exit_code)


def render_merge_report(report: consolidate.MergeReport) -> str:
    rows = [
        (r.status, r.path, ", ".join(r.simulation_ids[:3]) + (" …" if len(r.simulation_ids) > 3 else ""),
         r.era or "", r.rows if r.status in ("merged", "planned") else "", r.reason or "")
        for r in report.results
    ]
    lines = [format_table(["status", "source", "simulation", "era", "rows", "reason"], rows)] if rows else []
    merged, skipped, failed = len(report.merged), len(report.skipped), len(report.failed)
    verb = "would merge" if report.dry_run else "merged"
    summary = (f"{verb} {merged}, skipped {skipped}, failed {failed} "
               f"into {report.target} (experiment {report.experiment_id}) in {report.seconds:.1f}s")
    if not merged and not failed and skipped:
        summary += " — nothing new to merge"
    lines.append(summary)
    return "\n".join(lines)


@cli.command()
@click.argument("database")
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@click.option("--simulation-id", help="Simulation id for the rows of a legacy run file [default: the id the file "
              "records, else its file stem]; in an AgentFarm experiment file, for rows that have none.")
@click.option("--no-backup", is_flag=True, help="Do not write the VACUUM INTO backup beside the database first.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@reports_errors
def upgrade(database, revision, simulation_id, no_backup, as_json) -> None:
    """Bring a database to the current schema, in place.

    \b
    DATABASE is an experiment database (path or SQLAlchemy URL) at an older
    revision, a legacy AgentFarm run file (it becomes a one-simulation
    experiment database) or an experiment file written by AgentFarm's
    ExperimentDatabase.  A backup is written beside it first (its path is
    printed); the upgrade runs in one transaction, so a failure leaves the
    database as it was.  A database already at head is left alone.

    \b
    Example:
      farm-merge upgrade runs/simulation_20250301.db --simulation-id sim_0301
    """
    report = inplace.upgrade(database, revision, simulation_id=simulation_id, backup=not no_backup,
                             progress=None if as_json else lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(to_json(report.to_dict()))
    else:
        click.echo("\n".join(report.lines()))


@cli.command()
@click.argument("database")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@reports_errors
def current(database, as_json) -> None:
    """Show a database's schema revision and whether it is at head.

    \b
    Exit status: 0 at head; 1 when it needs `farm-merge upgrade` (an older
    revision, a legacy run file, an AgentFarm experiment file, an empty
    database) or a newer farm-merge, or is no database of ours at all.
    """
    state = migrations.state_of(database)
    head = migrations.head_revision()
    if as_json:
        click.echo(to_json({"database": database, "kind": state.kind, "revision": state.revision, "head": head,
                            "at_head": state.at_head, "too_new": state.too_new, "era": state.era,
                            "description": state.description}))
    else:
        click.echo(render_state(database, state, head))
    sys.exit(0 if state.at_head else 1)


def render_state(database: str, state: migrations.DatabaseState, head: str) -> str:
    if state.at_head:
        return f"{database}: {state.revision} (head)"
    if state.too_new:
        return (f"{database}: {state.revision}, newer than this release of farm-merge knows (head {head}); "
                "upgrade farm-merge: pip install -U farm-merge")
    if state.kind == "experiment":
        return f"{database}: {state.revision or 'no revision'}, behind head {head}; run: farm-merge upgrade {database}"
    if state.kind in migrations.ADOPTABLE or state.kind == "new":
        return f"{database}: {state.description}, no revision; run: farm-merge upgrade {database}"
    return f"{database}: not a farm-merge experiment database ({state.description})"


@cli.command()
@click.argument("directory", default="farm-merge-demo", type=click.Path(file_okay=False))
@click.option("--runs", default=36, show_default=True, help="How many sample run files to write.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@reports_errors
def demo(directory, runs, quiet) -> None:
    """Write sample AgentFarm run files of every era into DIRECTORY/runs and merge them.

    Nothing of yours is needed: this shows the whole job on a fresh machine.  Running it
    again reuses the files and shows that a second merge adds nothing.
    """
    folder = Path(directory)
    run_dir = folder / "runs"
    if not any(run_dir.glob("*.db")):
        written = samples.write_sample_runs(run_dir, runs)
        click.echo(f"wrote {len(written)} sample run files of {len({w.era for w in written})} eras to {run_dir}",
                   err=True)
    target = folder / "experiment.db"
    report = consolidate.merge([str(run_dir / "*.db")], str(target), name="farm-merge demo",
                               description="Sample AgentFarm runs of every schema era",
                               progress=False if quiet else None)
    click.echo(render_merge_report(report))
    if target.exists():
        sources = sum(p.stat().st_size for p in run_dir.glob("*.db"))
        click.echo(f"{target}: {human_bytes(target.stat().st_size)} from {human_bytes(sources)} of run files")
    sys.exit(report.exit_code)


def main() -> None:
    cli(prog_name="farm-merge")
