"""What every command-line tool shares: a known failure ends in one line on stderr, exit code 2.

Introduced in notebook 07. A tool's ``main(argv)`` raises as any Python function does (the notebooks and tests call
it); ``if __name__ == "__main__": sys.exit(cli.run(main, "python -m heartseg_utils.predict"))`` turns a raised error
into one line naming the file, the problem and the fix::

    python -m heartseg_utils.predict: error: Scan scans/a.nii.gz has 12 NaN/inf voxel(s). Re-export ...

The full traceback is printed only with ``--debug``. Known failures (``ValueError``, ``OSError`` and their kin:
bad input, a missing or damaged file, a refused overwrite) exit with 2; anything else is a bug, still said in one
line (exit 1) with the advice to rerun with ``--debug`` and report it.

The same module reads the files of a run folder that the tools open (JSON files and the checkpoint), so that a
truncated ``config.json`` or a corrupt ``best_model.pt`` is named instead of ending in a parser's traceback.
Layer 0: no heartseg_utils imports (torch only inside :func:`check_checkpoint`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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


def read_json(path: str | os.PathLike[str], *, what: str = "", fix: str = "") -> Any:
    """Parse a JSON file, or raise ``ValueError`` naming it (truncated, not JSON, unreadable).

    Introduced in notebook 07.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. ``"the run's settings"``).
        fix: what to do about a damaged file.

    Returns:
        The parsed value.
    """
    path = Path(path)
    fix = fix or "restore the file from a copy, or re-create it with the tool that wrote it"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}{f' ({what})' if what else ''} is not text ({err.reason}): {fix}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        state = "is empty" if not text.strip() else f"is not valid JSON ({err.msg} at line {err.lineno})"
        raise ValueError(f"{path}{f' ({what})' if what else ''} {state}: truncated or edited by hand? {fix}") from err


def check_checkpoint(path: str | os.PathLike[str], fix: str) -> None:
    """Load a checkpoint with ``weights_only=True`` to see that it is whole; raise ``ValueError`` naming it if not.

    Introduced in notebook 07. Never suggests ``weights_only=False``: a file that fails here is damaged or not a
    checkpoint of this package, and unpickling it in full could run code.

    Args:
        path: the ``.pt`` file.
        fix: what to do about a damaged file.
    """
    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, pickle and EOF errors alike: the file is damaged
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(
            f"{path} cannot be loaded as a PyTorch checkpoint ({type(err).__name__}: {first}): it is truncated, "
            f"corrupt or not a checkpoint. {fix}"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict. {fix}")


def check_run_files(run_dir: str | os.PathLike[str], *, postprocessing: bool = True) -> None:
    """Check the files of a finished run that predict and export read, before ``inference.load_run`` reads them.

    Introduced in notebook 07: ``config.json`` (a JSON object), ``best_model.pt`` (loads), and where present
    ``metrics.json`` and ``postprocessing.json`` (JSON objects; the latter with ``keep_largest``).

    Args:
        run_dir: a finished training run.
        postprocessing: also check ``postprocessing.json`` (predict reads it, export does not).

    Raises:
        FileNotFoundError: ``config.json`` or ``best_model.pt`` is missing.
        ValueError: a file is truncated, corrupt or of the wrong shape; the message names it.
    """
    run = Path(run_dir).expanduser()
    fix = f"retrain the run, or copy {run} again from where it was trained"
    for name in ("config.json", "best_model.pt"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} is missing: {run} is not a finished training run; {fix}")
    names = ("config.json", "metrics.json", "postprocessing.json")[: 3 if postprocessing else 2]
    for name in names:
        path = run / name
        if name != "config.json" and not path.exists():
            continue
        content = read_json(path, fix=fix)
        if not isinstance(content, dict):
            raise ValueError(f"{path} must hold a JSON object, not a {type(content).__name__}: {fix}")
        if name == "config.json" and "model_name" not in content:
            raise ValueError(f"{path} has no model_name: it is not a training run's config.json; {fix}")
        if name == "postprocessing.json" and not isinstance(content.get("keep_largest"), bool):
            raise ValueError(
                f"{path} needs keep_largest true or false: {fix}, or delete the file (then no post-processing)"
            )
    check_checkpoint(run / "best_model.pt", fix)


def refuse_link_loop(path: str | os.PathLike[str], what: str) -> None:
    """Raise ``ValueError`` for a symbolic link loop (which ``Path.exists`` reports as missing). Notebook 07."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(
                f"{what} {path} is a symbolic link loop (it points, directly or through others, back at itself): "
                "fix or remove the link"
            ) from err


def load_checked_run(
    run_dir: str | os.PathLike[str], device: str, load: Callable[[Path, str], T], *, postprocessing: bool = True
) -> T:
    """``load(run_dir, device)`` (``inference.load_run``) after :func:`check_run_files`. Introduced in notebook 07.

    Args:
        run_dir: a finished training run.
        device: "auto", "cpu" or "cuda".
        load: the loader, ``inference.load_run`` (passed in: this module imports no heartseg_utils module).
        postprocessing: also check ``postprocessing.json`` (see :func:`check_run_files`).

    Returns:
        What ``load`` returns: ``(model, config)``.

    Raises:
        FileNotFoundError: no such run folder, or a required file missing.
        ValueError: a symbolic link loop, a truncated or corrupt ``config.json``, ``metrics.json``,
            ``postprocessing.json`` or ``best_model.pt``, or a config that builds no network.
    """
    run = Path(run_dir).expanduser()
    refuse_link_loop(run, "run_dir")
    if run.is_dir():
        check_run_files(run, postprocessing=postprocessing)
    try:
        return load(run, device)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{run / 'config.json'} does not describe a network this package builds ({type(err).__name__}: {err}):"
            " retrain the run, or restore its config.json"
        ) from err
