"""What every command-line tool shares: a known failure ends in one line on stderr, exit code 2.

Introduced in notebook 07. A tool's ``main(argv)`` raises as any Python function does (the notebooks and tests call
it); ``if __name__ == "__main__": sys.exit(cli.run(main, "python -m heartseg_utils.predict"))`` turns a raised error
into one line naming the file, the problem and the fix::

    python -m heartseg_utils.predict: error: Scan scans/a.nii.gz has 12 NaN/inf voxel(s). Re-export ...

The full traceback is printed only with ``--debug``. Known failures (``ValueError``, ``OSError`` and their kin:
bad input, a missing or damaged file, a refused overwrite) exit with 2; anything else is a bug, still said in one
line (exit 1) with the advice to rerun with ``--debug`` and report it.

The files of a run folder are read by :mod:`heartseg_utils.runs`, whose errors name the file (a truncated
``config.json``, a corrupt ``best_model.pt``): this module only turns them into the one line. Layer 0: no
heartseg_utils imports.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Callable
from typing import Any

KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
EXIT_KNOWN = 2
EXIT_BUG = 1
_ERRNO_FIX = {
    errno.EACCES: "check the permissions of the file or folder",
    errno.EPERM: "check the permissions of the file or folder",
    errno.ENOSPC: "free disk space, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ELOOP: "a symbolic link points back at itself: fix the link",
    errno.ENAMETOOLONG: "use a shorter path",
}


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (show the full traceback of a failure) to a tool's parser. Introduced in notebook 07."""
    parser.add_argument("--debug", action="store_true", help="on a failure, print the full traceback too")


def one_line(prog: str, err: BaseException) -> str:
    """The one line a failure ends in: ``<prog>: error: <message>`` with the message on one line.

    Introduced in notebook 07.

    Args:
        prog: the tool, e.g. ``"python -m heartseg_utils.predict"``.
        err: the raised error.

    Returns:
        The line (no newline).
    """
    message = " ".join(str(err).split())
    if isinstance(err, OSError) and err.errno in _ERRNO_FIX:
        message = f"{message}: {_ERRNO_FIX[err.errno]}"
    if not isinstance(err, KNOWN_ERRORS):
        return (
            f"{prog}: internal error ({type(err).__name__}: {message}); rerun with --debug for the traceback "
            "and report it"
        )
    return f"{prog}: error: {message or type(err).__name__}"


def run(main: Callable[[list[str]], Any], prog: str, argv: list[str] | None = None) -> int:
    """Run a tool's ``main``: 0 on success; a failure prints one line to stderr and returns 2 (1 for a bug).

    Introduced in notebook 07.

    Args:
        main: the tool's ``main(argv)``; it may raise.
        prog: the name the line starts with.
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` also prints the traceback.

    Returns:
        The exit code, for ``sys.exit``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the command line's boundary: every failure becomes one line
        if debug:
            traceback.print_exc()
        print(one_line(prog, err), file=sys.stderr)
        return EXIT_KNOWN if isinstance(err, KNOWN_ERRORS) else EXIT_BUG
    return 0
