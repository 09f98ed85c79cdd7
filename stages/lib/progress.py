"""Progress of a stage on stderr: a rich bar on a terminal, plain lines in logs.

On a terminal `steps` shows a live `rich.progress` bar (done/total, elapsed time). When stderr
is not a terminal (DVC's logs, CI, a test capturing output) it prints one plain line per step
instead, with no animation and no ANSI codes, so that logs stay readable and greppable:
``split: 3/4 partition(s) done (1.2 s)``. `note` prints a one-off line (a status, a step's
outcome) to stderr; while a bar is live, rich shows such lines above it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any


def _console() -> Any:
    """A rich console on stderr when stderr is a terminal, else None (plain lines).

    rich is imported here, not at module level: `pipeline --help` must not pay for it.
    """
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None


def note(message: str) -> None:
    """One line of progress on stderr, plain text (under a live bar, rich shows it above)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def steps(what: str, total: int, unit: str = "partition(s)") -> Iterator[Callable[[], None]]:
    """A counter of `total` steps of `what`; the block calls the yielded function after each."""
    console = _console()
    if total <= 0:  # nothing to count: no bar, no line
        yield lambda: None
        return
    if console is None:
        start, done = time.monotonic(), 0

        def advance() -> None:
            nonlocal done
            done += 1
            note(f"{what}: {done}/{total} {unit} done ({time.monotonic() - start:.1f} s)")

        yield advance
        return
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(escape(what)), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)
