"""Ctrl-C and SIGTERM: one way to stop, whatever a command is doing.

The command line installs :func:`install` first thing: SIGINT and SIGTERM then both raise
:class:`KeyboardInterrupt` in the main thread, so that every ``try/finally`` of the library
(rolling back a transaction, removing a staging folder) runs alike for both, and the command
line turns it into one line and exit status 130 or 143 (128 + the signal's number).  A
signal is held while the command line parses its arguments and after the command is done
(:func:`live` marks the command itself): one that comes before is raised as the command
starts, one that comes after lets the finished command exit as it would have.

Two rules keep the clean-up whole:

* only the first signal raises; later ones, while the command unwinds, are noted and
  ignored (a second Ctrl-C must not cut the clean-up of the first in half; SIGKILL still
  stops a process that hangs);
* :func:`deferred` holds a signal that arrives during a step that must not be cut in half
  (moving a set of finished files into place), and raises it when the step is done.  Outside
  the command line (a library caller, the main thread) it holds Ctrl-C the same way.

:func:`note` records output a command has put in place whole, and :func:`mark` where a command
is when that changes what an interrupt leaves (a merge that has begun to write its target), so that the line printed on an interrupt can say what is kept.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: The signals a command stops on.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A command (its name, if known) stopped by SIGINT or SIGTERM; ``exit_status`` is 128 +
    the signal's number.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` may take it for an error.
    """

    def __init__(self, signum: int, command: str | None = None):
        self.signum, self.command = signum, command
        self.exit_status = 128 + signum
        super().__init__(signal.Signals(signum).name)


class SignalReceived(KeyboardInterrupt):
    """What the handler raises: a KeyboardInterrupt to every ``except`` and ``finally``.

    A subclass, not KeyboardInterrupt itself: CPython remembers a KeyboardInterrupt that
    leaves code run by ``exec`` of a string (dataclasses and namedtuples make their methods
    so) as unhandled, even once it is caught, and then ends the process with SIGINT instead
    of its exit status; it checks for that exact type."""


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.received: int | None = None  # the first signal, once one came
        self.raised = False
        self.deferring = 0
        self.pending = False
        self.notes: list[str] = []
        self.marks: set[str] = set()


_state = _State()


def _handler(signum: int, frame) -> None:
    if _state.received is None:
        _state.received = signum
    if _state.raised:
        return  # already stopping: let the clean-up finish
    if _state.deferring:
        _state.pending = True
        return
    _state.raised = True
    raise SignalReceived


class _NotTheInterrupt(logging.Filter):
    """Drops a log record about the interrupt itself: SQLAlchemy's pool logs an exception
    raised while it closes a connection, with its traceback, before passing it on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


_QUIET = _NotTheInterrupt()


def install() -> None:
    """Make SIGINT and SIGTERM raise :class:`KeyboardInterrupt` (once) in the main thread
    while a command runs (:func:`live`); until then they are held.  Libraries' log records
    of that KeyboardInterrupt are not printed (the command line says it in one line)."""
    _state.__init__()
    _state.installed = True
    _state.deferring = 1
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    if logging.lastResort is not None:  # what prints a library's records when nothing is configured
        logging.lastResort.addFilter(_QUIET)


@contextmanager
def live() -> Iterator[None]:
    """The command itself: a signal held before it is raised as it starts; one after it is held."""
    if not _state.installed:
        yield
        return
    _state.deferring -= 1
    try:
        if not _state.deferring and _state.pending:
            _state.pending = False
            _state.raised = True
            raise SignalReceived
        yield
    finally:
        _state.deferring += 1


def ignore() -> None:
    """Ignore SIGINT and SIGTERM from now on: the command is done, the interpreter exits.

    (Python puts a signal with a handler of its own back to the system's default while it
    shuts down, so that one arriving then would kill the finished command; an ignored one
    it leaves ignored.)"""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def installed() -> bool:
    """True once :func:`install` ran (the command line)."""
    return _state.installed


def received() -> int | None:
    """The signal the command is stopping on (None: none came)."""
    return _state.received


def notes() -> list[str]:
    """What :func:`note` recorded since :func:`install`."""
    return list(_state.notes)


def note(text: str) -> None:
    """Record output that is in place and whole (said on an interrupt)."""
    if _state.installed:
        _state.notes.append(text)


#: A merge that has begun to open its target for writing (or to create it); before it, an
#: interrupt leaves nothing written.
WRITING_TARGET = "writing the target"


def mark(fact: str, holds: bool = True) -> None:
    """Record that ``fact`` (such as :data:`WRITING_TARGET`) holds, or no longer does, where
    the command now is (said on an interrupt)."""
    if _state.installed:
        (_state.marks.add if holds else _state.marks.discard)(fact)


def marked(fact: str) -> bool:
    """True if :func:`mark` last recorded that ``fact`` holds."""
    return fact in _state.marks


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then raise :class:`KeyboardInterrupt`.

    For short steps that must finish once begun.  Without :func:`install`, Ctrl-C is held
    the same way when this runs in the main thread (SIGTERM keeps its default there)."""
    temporary = None
    if not _state.installed and threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            temporary = signal.signal(signal.SIGINT, _hold)
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if temporary is not None:
            signal.signal(signal.SIGINT, temporary)
        if not _state.deferring and _state.pending:
            _state.pending = False
            if not _state.raised:
                _state.raised = _state.installed
                raise SignalReceived


def _hold(signum: int, frame) -> None:
    _state.pending = True
