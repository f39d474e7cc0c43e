"""Ctrl-C and SIGTERM: one way to stop, whatever a command is doing.

The command line installs :func:`install` first thing: SIGINT and SIGTERM then both raise
:class:`KeyboardInterrupt` in the main thread, so that every ``try/finally`` of the library
(rolling back a transaction, removing a staging folder) runs alike for both, and the command
line turns it into one line and exit status 130 or 143 (128 + the signal's number).

Two rules keep the clean-up whole:

* only the first signal raises; later ones, while the command unwinds, are noted and
  ignored (a second Ctrl-C must not cut the clean-up of the first in half; SIGKILL still
  stops a process that hangs);
* :func:`deferred` holds a signal that arrives during a step that must not be cut in half
  (moving a set of finished files into place), and raises it when the step is done.  Outside
  the command line (a library caller, the main thread) it holds Ctrl-C the same way.

:func:`note` records output a command has put in place whole, so that the line printed on an
interrupt can say what is kept.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: The signals a command stops on.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A command stopped by SIGINT or SIGTERM; ``exit_status`` is 128 + the signal's number.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` may take it for an error.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_status = 128 + signum
        super().__init__(signal.Signals(signum).name)


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.received: int | None = None  # the first signal, once one came
        self.raised = False
        self.deferring = 0
        self.pending = False
        self.notes: list[str] = []


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
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGINT and SIGTERM raise :class:`KeyboardInterrupt` (once) in the main thread."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    _state.__init__()
    _state.installed = True


def uninstall() -> None:
    """Back to Python's defaults (tests running the command line in-process call this)."""
    if _state.installed:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _state.__init__()


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
                raise KeyboardInterrupt


def _hold(signum: int, frame) -> None:
    _state.pending = True
