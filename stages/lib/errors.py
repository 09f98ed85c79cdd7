"""Errors a user can act on, and the exit codes stages use for them.

Exit codes: 2 = bad input or configuration (fix the data or params.yaml), 3 = a quality or privacy
gate failed (validation, privacy scan, evaluation): not transient, never worth a retry;
74 (sysexits EX_IOERR) = an output could not be written: disk full, read-only or no permission
(fix the environment; an immediate retry would fail the same way).
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_WRITE_FAILED = 74


class InputError(ValueError):
    """Input data that cannot be processed: the message names file, column or row and the fix."""


class GateFailure(RuntimeError):
    """A quality or privacy gate failed; the message names the check, its value and threshold."""


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main(), turning known errors into one clear line and an exit code."""
    from stages.lib.io import WriteError, describe_write_error
    from stages.lib.keys import MissingKeyError
    from stages.lib.params import ParamsError
    from stages.lib.summary import AccountingError

    try:
        code = main()
        if isinstance(code, int) and code:  # a main() that returns its exit status
            sys.exit(code)
    except GateFailure as e:
        print(f"GATE FAILED: {e}", file=sys.stderr)
        sys.exit(EXIT_GATE_FAILED)
    except (InputError, ParamsError, MissingKeyError, AccountingError, FileNotFoundError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as e:
        # A write the stage did not route through stages.lib.io (a library writing files itself).
        err = e
        if not isinstance(e, WriteError):
            verb = "access" if e.errno in (errno.EACCES, errno.EPERM) else "write"
            err = describe_write_error(e, e.filename or "an output", verb=verb)
        if not isinstance(err, WriteError):
            raise
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(EXIT_WRITE_FAILED)
