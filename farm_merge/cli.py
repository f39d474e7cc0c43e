"""The ``farm-merge`` command line: each command parses its options, calls one library
function, and turns a :class:`~farm_merge.errors.FarmMergeError` into a one-line error.

Each command imports the library modules it uses when it runs, so that ``farm-merge
--help`` loads no database code and ``farm-merge current`` no merge or query code.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from farm_merge._version import __version__
from farm_merge.cli_flags import as_flags
from farm_merge.cli_interrupts import Commands, run
from farm_merge.errors import FarmMergeError
from farm_merge.logging.liveness import STALE_AFTER_S
from farm_merge.query import views
from farm_merge.query.output import format_table, human_bytes, to_json
from farm_merge.query.points import POINTS

if TYPE_CHECKING:
    from farm_merge.consolidate.report import MergeReport


def reports_errors(func):
    """Turn library errors into ``Error: …`` (in the flags' words) and exit status 1, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FarmMergeError as e:
            raise click.ClickException(as_flags(str(e))) from e

    return wrapper


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--keep-copies", is_flag=True, help="Merge a source whose bytes are another source's (a copied run "
              "file) as a simulation of its own [default: skip it as a copy].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary table; only errors.")
@reports_errors
def merge(sources, target, experiment_id, name, description, id_template, dry_run, replace, verify,
          include_active, keep_copies, as_json, quiet) -> None:
    """Merge per-run .db files (paths or globs; ** is recursive) into one experiment database.

    \b
    Every row lands under its simulation's id; sources are never modified.
    Identical sources already merged are skipped, so re-running is safe.
    Exit status: 0 if every source merged or was skipped, 1 if any failed.

    \b
    Example:
      farm-merge merge 'runs/**/*.db' --into experiments/exp_001.db --name "LR sweep"
    """
    from farm_merge.consolidate import engine

    report = engine.merge(
        sources, target, experiment_id=experiment_id, name=name, description=description,
        id_template=id_template, dry_run=dry_run, replace=replace, verify=verify,
        include_active=include_active, keep_copies=keep_copies, progress=False if quiet or as_json else None,
    )
    for result in report.results:
        result.reason = result.reason and as_flags(result.reason)
    if as_json:
        click.echo(to_json(report.to_dict()))
    elif not quiet:
        click.echo(render_merge_report(report))
    else:
        for failed in report.failed:
            click.echo(f"failed: {failed.path}: {failed.reason}", err=True)
    sys.exit(report.exit_code)


def render_merge_report(report: MergeReport) -> str:
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
    if not merged and not failed and not any(r.reason.startswith("active:") for r in report.skipped):
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
    from farm_merge.consolidate import inplace

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
    from farm_merge.storage import versions

    state = versions.state_of(database)
    head = versions.head_revision()
    if as_json:
        click.echo(to_json({"database": database, "kind": state.kind, "revision": state.revision, "head": head,
                            "at_head": state.at_head, "too_new": state.too_new, "era": state.era,
                            "description": state.description}))
    else:
        click.echo(state.line(database))
    sys.exit(0 if state.at_head else 1)


@cli.command("alembic-ini")
def alembic_ini() -> None:
    """Print the path of the alembic.ini shipped beside the migrations.

    \b
    So that Alembic itself runs them from any folder:
      alembic -c "$(farm-merge alembic-ini)" -x db=experiments/exp_001.db upgrade head
    """
    from farm_merge.storage import migrations

    click.echo(migrations.alembic_ini())


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
    from farm_merge.consolidate import engine
    from farm_merge.samples import runfiles

    folder = Path(directory)
    run_dir = folder / "runs"
    if not any(run_dir.glob("*.db")):
        written = runfiles.write_sample_runs(run_dir, runs)
        click.echo(f"wrote {len(written)} sample run files of {len({w.era for w in written})} eras to {run_dir}",
                   err=True)
    target = folder / "experiment.db"
    report = engine.merge([str(run_dir / "*.db")], str(target), experiment_id="demo", name="farm-merge demo",
                               description="Sample AgentFarm runs of every schema era",
                               progress=False if quiet else None)
    click.echo(render_merge_report(report))
    if target.exists():
        sources = sum(p.stat().st_size for p in run_dir.glob("*.db"))
        click.echo(f"{target}: {human_bytes(target.stat().st_size)} from {human_bytes(sources)} of run files")
        click.echo(f"next: farm-merge summary {target}   (or info, list, compare --metric total_agents, split)")
        click.echo(f"      farm-merge summary {target} --by learning_rate")
        click.echo(f"      farm-merge compare {target} --metric total_agents --by learning_rate "
                   "--plot agents_by_learning_rate.png")
    sys.exit(report.exit_code)


# --- query and export ---------------------------------------------------------------------

def open_query_tool(database: str, experiment_id: str | None):
    """The query tool on ``database``; imported here, so that only the query commands load it."""
    from farm_merge.query.tool import ExperimentQueryTool

    return ExperimentQueryTool(database, experiment_id)


def output_formats(func):
    """``--json`` and ``--csv``: results for programs instead of an aligned table."""
    func = click.option("--csv", "as_csv", is_flag=True, help="Print CSV (every field) instead of a table.")(func)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (every field) instead of a table.")(func)


def experiment_option(func):
    return click.option("--experiment-id", help="Only this experiment's simulations (on a server database "
                        "experiments share the tables).")(func)


def simulations_option(help_text: str):
    return click.option("--simulation-id", "simulation_ids", multiple=True, metavar="ID", help=help_text)


def by_option(help_text: str):
    return click.option("--by", "by", multiple=True, metavar="PARAM[,PARAM]", help=help_text)


def parameter_names(by: tuple[str, ...]) -> list[str]:
    """``--by a,b --by c`` as ``[a, b, c]``."""
    return [name.strip() for option in by for name in option.split(",") if name.strip()]


def chosen_format(as_json: bool, as_csv: bool) -> str:
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    return "json" if as_json else "csv" if as_csv else "table"


@cli.command()
@click.argument("database")
@experiment_option
@output_formats
@reports_errors
def info(database, experiment_id, as_json, as_csv) -> None:
    """Describe an experiment database: experiment, schema revision, size, simulations by
    status, rows per table and the sources merged into it.

    \b
    Example:
      farm-merge info experiments/exp_001.db
    """
    fmt = chosen_format(as_json, as_csv)
    with open_query_tool(database, experiment_id) as tool:
        click.echo(views.render_info(tool.get_experiment_info(), fmt))


@cli.command("list")
@click.argument("database")
@experiment_option
@simulations_option("Only this simulation (repeatable).")
@click.option("--stale-after", type=click.FloatRange(min=0), default=STALE_AFTER_S, show_default=True,
              metavar="SECONDS", help="Show a running simulation with no heartbeat for this long as stale.")
@output_formats
@reports_errors
def list_(database, experiment_id, simulation_ids, stale_after, as_json, as_csv) -> None:
    """One line per simulation: id, status, era, steps, agents that ever lived, start and
    end, source file (--csv and --json: every field, a params.NAME column per parameter).

    A simulation still 'running' whose logger has not flushed for --stale-after seconds
    is shown as 'running (stale)': its process has most likely died.

    \b
    Example:
      farm-merge list experiments/exp_001.db
    """
    fmt = chosen_format(as_json, as_csv)
    with open_query_tool(database, experiment_id) as tool:
        rows = tool.list_records(simulation_ids or None, stale_after_s=stale_after)
    click.echo(views.render_records(rows, fmt, views.list_view(rows), parameter_columns=True))
    note = views.stale_note(rows, stale_after)
    if note and fmt == "table":
        click.echo(note)


@cli.command()
@click.argument("database")
@experiment_option
@simulations_option("Only this simulation (repeatable).")
@by_option("One row per combination of values of these parameters (dotted names for nested ones): "
           "how many simulations, mean, sd, min and max of each figure.")
@output_formats
@reports_errors
def summary(database, experiment_id, simulation_ids, by, as_json, as_csv) -> None:
    """Per simulation: final and peak agents, resources, health and reward, births,
    deaths and parameters (the table shows the parameters that differ; --csv and --json a
    params.NAME column per parameter).  With --by, per group of simulations instead.

    \b
    Examples:
      farm-merge summary experiments/exp_001.db
      farm-merge summary experiments/exp_001.db --by learning_rate
    """
    fmt = chosen_format(as_json, as_csv)
    names = parameter_names(by)
    with open_query_tool(database, experiment_id) as tool:
        if names:
            groups = tool.summary_by(names, simulation_ids=simulation_ids or None)
            click.echo(views.render_records(groups, fmt, views.summary_by_view(groups, names)))
            if fmt == "table" and groups:
                click.echo(views.SUMMARY_BY_NOTE)
            return
        rows = tool.summary_records(simulation_ids=simulation_ids or None)
    click.echo(views.render_records(rows, fmt, views.summary_view(rows), parameter_columns=True))


@cli.command()
@click.argument("database")
@click.option("--metric", default="total_agents", show_default=True,
              help="A numeric column of simulation_steps; an unknown one lists the valid ones.")
@click.option("--at", "at", default="final", show_default=True, metavar="|".join(POINTS) + "|STEP",
              help="Where to read the metric: its final value, max, min or mean over the steps, or at a step.")
@click.option("--series", is_flag=True, help="Print the metric at every step, one column per simulation.")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Also draw the metric per step in one PNG (needs the plot extra): with --by one colour per "
                   "group, its mean over a band of ±1 sd.")
@by_option("Per combination of values of these parameters: how many simulations, mean, sd, min and max of "
           "the metric at --at.")
@experiment_option
@simulations_option("Only this simulation (repeatable).")
@output_formats
@reports_errors
def compare(database, metric, at, series, plot, by, experiment_id, simulation_ids, as_json, as_csv) -> None:
    """Compare a metric across simulations at one point, or per step with --series;
    with --by, across groups of simulations sharing parameter values.

    \b
    Examples:
      farm-merge compare experiments/exp_001.db --metric total_agents --at max
      farm-merge compare experiments/exp_001.db --metric average_reward --series --plot reward.png
      farm-merge compare experiments/exp_001.db --metric total_agents --by learning_rate --plot agents.png
    """
    fmt = chosen_format(as_json, as_csv)
    ids = simulation_ids or None
    names = parameter_names(by)
    if names and series:
        raise click.UsageError("--by groups the metric at --at; it does not apply to --series")
    with open_query_tool(database, experiment_id) as tool:
        if series:
            columns, rows = tool.series_table(metric, simulation_ids=ids)
            views.write_series(columns, rows, fmt, metric, sys.stdout)
        elif names:
            result = tool.compare_by(metric, names, at, simulation_ids=ids)
            label = result[0]["at"] if result else str(at)
            click.echo(views.render_records(result, fmt, views.compare_by_view(result, names, metric, label)))
        else:
            result = tool.compare_metric(metric, at, simulation_ids=ids)
            label = result[0]["at"] if result else str(at)
            click.echo(views.render_records(result, fmt, views.compare_view(result, metric, label)))
            if fmt == "table" and result:
                click.echo(views.compare_footer(result))
        if plot:
            figure = tool.plot_metric(metric, plot, simulation_ids=ids, by=names or None)
            click.echo(f"wrote {plot}: {figure.axes[0].get_title()}".replace("\n", " "), err=True)


@cli.command()
@click.argument("database")
@simulations_option("The simulation to export (repeatable).")
@click.option("--all", "export_all", is_flag=True, help="Export every simulation (of --experiment-id).")
@click.option("--output", "-o", required=True, type=click.Path(),
              help="Folder for CSV files or Parquet datasets; for sqlite the file to write (or a folder to write it "
                   "in).")
@click.option("--format", "fmt", type=click.Choice(["csv", "sqlite", "parquet"]), default="csv", show_default=True,
              help="CSV files per table, a standalone SQLite experiment database, or a Parquet dataset per table "
                   "partitioned by simulation_id (needs the parquet extra).")
@click.option("--overwrite", is_flag=True, help="Replace files that already exist.")
@experiment_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@reports_errors
def export(database, simulation_ids, export_all, output, fmt, overwrite, experiment_id, as_json) -> None:
    """Export simulations to CSV files per table, a standalone SQLite file, or Parquet
    datasets (DIR/TABLE/simulation_id=ID/part-0.parquet, for Spark, DuckDB, Polars, pandas).

    \b
    Examples:
      farm-merge export experiments/exp_001.db --simulation-id sim_001 --output ./data
      farm-merge export experiments/exp_001.db --all --format sqlite --output ./exp_copy.db
      farm-merge export experiments/exp_001.db --all --format parquet --output ./parquet
    """
    if bool(simulation_ids) == export_all:
        raise click.UsageError("give --simulation-id ID (repeatable) or --all")
    with open_query_tool(database, experiment_id) as tool:
        report = tool.export(output, simulation_ids=simulation_ids or None, format=fmt, overwrite=overwrite)
    if as_json:
        click.echo(to_json(report.to_dict()))
        return
    rows = [[t.table, t.rows, t.path or ""] for t in report.tables]
    with_path = fmt in ("csv", "parquet")
    headers = ["table", "rows", "file" if fmt == "csv" else "dataset"] if with_path else ["table", "rows"]
    click.echo(format_table(headers, rows if with_path else [r[:2] for r in rows]))
    click.echo(f"exported {len(report.simulation_ids)} simulation{'s' if len(report.simulation_ids) != 1 else ''} "
               f"({report.rows} rows) to {report.output} in {report.seconds:.1f}s")


@cli.command()
@click.argument("database")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for the run files (<simulation_id>.db each).")
@simulations_option("Only this simulation (repeatable).")
@experiment_option
@click.option("--overwrite", is_flag=True, help="Replace run files that already exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no table; only errors.")
@reports_errors
def split(database, output, simulation_ids, experiment_id, overwrite, as_json, quiet) -> None:
    """Write every simulation back to a per-run SQLite file in the layout of its era.

    Merging the files again gives the same experiment content.

    \b
    Example:
      farm-merge split experiments/exp_001.db --output ./runs_again
    """
    with open_query_tool(database, experiment_id) as tool:
        report = tool.split(output, simulation_ids=simulation_ids or None, overwrite=overwrite,
                            progress=False if quiet or as_json else None)
    if as_json:
        click.echo(to_json(report.to_dict()))
    elif not quiet:
        click.echo(format_table(["simulation_id", "era", "rows", "file", "added"],
                                [[f.simulation_id, f.era, f.rows, f.path, "; ".join(f.added)] for f in report.files]))
        click.echo(f"wrote {len(report.files)} run files ({sum(f.rows for f in report.files)} rows) "
                   f"to {report.output} in {report.seconds:.1f}s")


@cli.command()
@click.argument("database")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port; the URL printed says which).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than loopback lets anyone who can reach it read every row.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option("--stale-after", type=click.FloatRange(min=0), default=STALE_AFTER_S, show_default=True,
              metavar="SECONDS", help="Show a running simulation with no heartbeat for this long as stale.")
@click.option("--sql-time-limit", type=click.FloatRange(min=0.001), default=5.0, show_default=True, metavar="SECONDS",
              help="Stop any query (of the SQL page or a chart) that runs longer.")
@click.option("--experiment-id", help="On a server database: snapshot only this experiment's simulations.")
@reports_errors
def serve(database, port, host, open_browser, stale_after, sql_time_limit, experiment_id) -> None:
    """Browse an experiment database in a web page (Datasette, read-only; needs the ui extra).

    \b
    The landing page is the experiment: its simulations and their status, a metric
    over steps coloured by a parameter, the final value per parameter value, births
    and deaths; each simulation has a page; every table, the SQL page and the JSON or
    CSV of every view are Datasette's.  While simulations log, the page refreshes.
    A server database is served as a read-only SQLite snapshot taken on start.
    Ctrl-C or SIGTERM stops it, at any moment, with exit status 0 (a server's normal end).

    \b
    Example:
      farm-merge serve experiments/exp_001.db --open
    """
    from farm_merge.ui.serve import serve as run

    run(database, host=host, port=port, open_browser=open_browser, stale_after_s=stale_after,
        sql_time_limit_s=sql_time_limit, experiment_id=experiment_id, say=click.echo,
        warn=lambda line: click.echo(line, err=True))


def main(argv: list[str] | None = None) -> None:
    """``farm-merge``: SIGINT and SIGTERM stop any command with one line on stderr that says
    what is kept, and exit status 130 or 143 (see :mod:`farm_merge.cli_interrupts`); ``serve``
    with ``stopped`` and 0."""
    run(cli, argv)
