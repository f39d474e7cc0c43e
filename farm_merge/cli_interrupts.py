"""How the command line ends a command that SIGINT or SIGTERM stopped: one line on stderr
that says what is kept, and exit status 130 or 143 (:mod:`farm_merge.interrupts` turns
the signals into one KeyboardInterrupt; this module says it to the user).

``serve`` is the exception: a signal is how a server is meant to end, so at any moment it
says ``stopped`` and exits 0.
"""

from __future__ import annotations

import signal
import sys

import click

from farm_merge import interrupts

#: What an interrupted command leaves, said on the one line it ends with.
KEPT = {
    "merge": "the target holds whole simulations only (each source is merged whole or not at all)",
    "demo": "the sample runs are written all or none, and the target holds whole simulations only",
    "upgrade": "the database is upgraded or as it was (the upgrade is one transaction; a backup written is whole)",
    "split": "no run file was written (they are put in place together once all are written)",
    "export": "nothing was written (the files are put in place together once all are written)",
}
#: What they leave instead when stopped before the merge began to write (:data:`interrupts.WRITING_TARGET`).
KEPT_BEFORE_WRITING = {
    "merge": "nothing was written (the target is written, or created, only once every source is inspected)",
    "demo": "the sample runs are written all or none, and nothing was merged yet",
}
#: Commands whose last step puts files in place: interrupted after it, they say what is there.
ENDS_WITH_FILES = ("split", "export", "compare")
#: Commands a signal is the normal end of (a server): at any moment they say ``stopped`` and exit 0.
ENDS_ON_A_SIGNAL = ("serve",)


class Command(click.Command):
    """A command of :class:`Commands`: the command itself is :func:`interrupts.live`, so that
    a signal held while the command line was parsed is raised once the command is known
    (``serve`` then says ``stopped``)."""

    def invoke(self, ctx: click.Context):
        with interrupts.live():
            return super().invoke(ctx)


class Commands(click.Group):
    """The command group: under :func:`run`, a command stopped by SIGINT or SIGTERM ends in
    :class:`~farm_merge.interrupts.Interrupted`, whatever the error its clean-up met."""

    command_class = Command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (SystemExit, click.exceptions.Exit):
            raise  # the command finished (a signal after it does not undo it)
        except BaseException as e:
            if not interrupts.installed() or interrupts.received() is None:
                raise
            raise interrupts.Interrupted(interrupts.received(), ctx.invoked_subcommand) from e


def interrupted_line(stop: interrupts.Interrupted) -> str:
    """The line an interrupted command ends with: what is kept, and that the same command completes it."""
    name = signal.Signals(stop.signum).name
    written = interrupts.notes() if stop.command in ENDS_WITH_FILES else []
    if written:
        return f"Interrupted ({name}) once its files were in place: {'; '.join(written)}"
    kept = None if interrupts.marked(interrupts.WRITING_TARGET) else KEPT_BEFORE_WRITING.get(stop.command)
    kept = kept or KEPT.get(stop.command, "nothing was changed")
    return f"Interrupted ({name}): {kept}; run the same command again to complete it"


def run(group: click.Group, argv: list[str] | None = None) -> None:
    """Run the command line ``group`` (made with ``cls=Commands``) with the signal handler
    installed; a command a signal stopped ends as the module docstring says."""
    interrupts.install()
    try:
        group.main(args=argv, prog_name="farm-merge")
    except interrupts.Interrupted as stop:
        # After Ctrl-C the terminal shows "^C" with no newline; start the line below it.
        lead = "\n" if stop.signum == signal.SIGINT and sys.stderr.isatty() else ""
        if stop.command in ENDS_ON_A_SIGNAL:  # stopped before it began serving: as it says once it serves
            click.echo(lead + "stopped", err=True)
            sys.exit(0)
        click.echo(lead + interrupted_line(stop), err=True)
        sys.exit(stop.exit_status)
    finally:
        interrupts.ignore()
