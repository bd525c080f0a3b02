"""The run folder: every file docs/contract.md lists is written and read here, and nowhere else.

Introduced in notebook 03. Training writes ``config.json``, ``split.json``, ``plan.json``, ``history.csv``,
``last.pt``, ``best_model.pt``, ``metrics.json``, ``postprocessing.json`` and ``qc.json`` into ``run_dir``; inference,
prediction and export read them back. Every write is atomic (a temp file renamed into place), so a reader never
sees half a file, and a file that cannot be read is an error naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: data.py (no torch) reads split.json through here
    import torch

CONFIG, SPLIT, PLAN, HISTORY = "config.json", "split.json", "plan.json", "history.csv"
LAST, BEST, METRICS, POSTPROCESSING = "last.pt", "best_model.pt", "metrics.json", "postprocessing.json"
QC = "qc.json"
HISTORY_FIELDS = ("epoch", "train_loss", "val_dice", "val_dice_min", "lr", "planned_epochs", "epoch_seconds")


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it: readers never see a half-written file.

    Introduced in notebook 03 (``json``, ``csv`` and ``torch.save`` outputs of a run, predicted masks and their
    reports all go through it). The temp name is unique per call, so two writers never share one, and ends in the
    file's own suffix (``.nii.gz``), which nibabel needs.

    Args:
        path: the final file.
        write: writes the content to the path it is given, e.g. ``lambda p: torch.save(obj, p)``.

    Returns:
        ``path``.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix  # writers that go by the suffix
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")  # unique per call
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON with :func:`write_atomic`. Introduced in notebook 03."""
    return write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2)))


def read_json(path: str | os.PathLike[str], *, fix: str = "") -> Any:
    """Read a run file written by :func:`write_json`; a missing, empty, truncated or non-text file is an error
    that names it and says what to do (``fix``)."""
    path = Path(path)
    fix = fix or f"retrain the run, or copy {path.parent} again from where it was trained"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a finished training run? {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not text ({err.reason}): {fix}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        state = "is empty" if not text.strip() else f"is not valid JSON ({err.msg} at line {err.lineno})"
        raise ValueError(f"{path} {state}: truncated or edited by hand? {fix}") from err


def _read_object(path: Path, *, needs: str = "") -> dict[str, Any]:
    """:func:`read_json` of a file that must hold a JSON object (with the key ``needs``, if given)."""
    content = read_json(path)
    if not isinstance(content, dict) or (needs and needs not in content):
        what = f"an object with {needs!r}" if needs else "a JSON object"
        raise ValueError(f"{path} must hold {what}: it is not this run's file; retrain the run or restore it")
    return content


def write_history(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write ``history.csv`` (one row per epoch, :data:`HISTORY_FIELDS`) atomically. Introduced in notebook 03.

    Columns the rows hold beyond :data:`HISTORY_FIELDS` (a multi-class run's ``val_dice_<class>``) follow them.
    """
    extra = [key for key in (rows[0] if rows else {}) if key not in HISTORY_FIELDS]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*HISTORY_FIELDS, *extra])
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


def read_split(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run's ``split.json`` (``dataset_dir``, ``seed``, ``train``, ``validation``, maybe ``holdout``).

    Introduced in notebook 04.

    Args:
        run_dir: a training run folder.

    Returns:
        The parsed file.
    """
    path = Path(run_dir).expanduser() / SPLIT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 03 first (it writes split.json), or use split='all'")
    split = read_json(path, fix="delete the run or retrain it")
    if not isinstance(split, dict) or not {"train", "validation"} <= set(split):
        raise ValueError(f"{path} needs 'train' and 'validation' lists of case ids; it has {sorted(split)}")
    return split


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a finished run, with ``"trained_with"``: the device and precision of its metrics.json.

    Introduced in notebook 04. Inference follows ``trained_with`` (``precision.amp_decision(recorded=...)``).
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(
            f"run_dir {run} does not exist: run notebook 03 first, or point run_dir at a training run"
        )
    for name in (CONFIG, BEST):
        if not (run / name).is_file():
            raise FileNotFoundError(
                f"{run / name} is missing: {run} is not a finished training run; run notebook 03 first"
            )
    config = _read_object(run / CONFIG, needs="model_name")
    metrics = _read_object(run / METRICS) if (run / METRICS).is_file() else {}
    config["trained_with"] = {"device": metrics.get("device"), "amp": metrics.get("amp")}
    return config


def read_keep_largest(run_dir: str | os.PathLike[str]) -> bool:
    """The run's post-processing decision (``postprocessing.json``); False where it has none. Notebook 04."""
    path = Path(run_dir).expanduser() / POSTPROCESSING
    if not path.is_file():
        return False
    keep = _read_object(path).get("keep_largest")
    if not isinstance(keep, bool):
        raise ValueError(
            f"{path} needs keep_largest true or false: retrain the run, or delete the file (no post-processing)"
        )
    return keep


def read_tta(run_dir: str | os.PathLike[str]) -> bool:
    """The run's flip-TTA decision (``postprocessing.json`` ``tta``); False where it has none (older runs)."""
    path = Path(run_dir).expanduser() / POSTPROCESSING
    if not path.is_file():
        return False
    tta = _read_object(path).get("tta", False)
    if not isinstance(tta, bool):
        raise ValueError(f"{path} needs tta true or false: retrain the run, or delete the file (no post-processing)")
    return tta


def read_qc(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's quality control (``qc.json``, written by training); None for a run trained before QC existed."""
    path = Path(run_dir).expanduser() / QC
    if not path.is_file():
        return None
    record = _read_object(path)
    parts = record.get("classes") if record.get("label_mode") == "multiclass" else {"": record}
    if not isinstance(parts, dict) or not parts:
        raise ValueError(f"{path} is multi-class but has no classes: retrain the run, or delete the file (no QC)")
    for name, part in parts.items():
        where = f" (class {name!r})" if name else ""
        if not isinstance(part, dict) or not all(k in part for k in ("reference", "quality_model")):
            raise ValueError(f"{path}{where} lacks reference or quality_model: retrain the run, or delete it (no QC)")
        if not isinstance(part.get("temperature"), dict):
            raise ValueError(f"{path}{where} lacks temperature: retrain the run, or delete the file (no QC)")
    return record


def load_weights(path: str | os.PathLike[str], net: torch.nn.Module, device: torch.device | str = "cpu") -> int:
    """Load ``best_model.pt`` (or ``last.pt``) weights into ``net`` (``weights_only=True``); returns the epoch.

    Introduced in notebook 04. Weights of another network are an error naming the file, not PyTorch's traceback.
    """
    checkpoint = _load(path, device)
    try:
        net.load_state_dict(checkpoint.get("model", checkpoint))
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not fit the network described by {Path(path).with_name(CONFIG)} "
            f"(was it copied from another run?): {str(err).splitlines()[0]}"
        ) from err
    return int(checkpoint.get("epoch", 0))


def _load(path: str | os.PathLike[str], device: torch.device | str) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; an unreadable file is an error naming it."""
    import torch

    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated, not a checkpoint, or a pickle that would run code
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(
            f"{path} cannot be loaded as a PyTorch checkpoint ({type(err).__name__}: {first}): it is truncated, "
            "corrupt or not a checkpoint of this package: retrain the run, or copy it again from where it was trained"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint: retrain the run")
    return checkpoint


def save_best(path: str | os.PathLike[str], net: torch.nn.Module, epoch: int, val_dice: float) -> None:
    """Write ``best_model.pt`` atomically: the weights of the best validation Dice so far. Notebook 03."""
    import torch

    best = {"model": net.state_dict(), "epoch": epoch, "val_dice": val_dice}
    write_atomic(path, lambda tmp: torch.save(best, tmp))


def new_state() -> dict[str, Any]:
    """The bookkeeping of a fresh run: best Dice so far, early-stopping count, seconds, planned epochs."""
    return {
        "best_val_dice": -1.0,
        "best_val_dice_min": -1.0,
        "best_epoch": 0,
        "bad_epochs": 0,
        "train_seconds": 0.0,
        "planned_epochs": 0,
    }


def save_checkpoint(
    path: str | os.PathLike[str], parts: dict[str, Any], state: dict[str, Any], history: list[dict[str, Any]]
) -> None:
    """Write ``last.pt`` atomically: everything :func:`load_checkpoint` needs to continue. Notebook 03.

    Args:
        path: ``run_dir/last.pt``.
        parts: ``{"model", "optimizer", "scaler", "scheduler"}``: objects with ``state_dict()`` (scheduler may be None).
        state: the bookkeeping of :func:`new_state`.
        history: the epochs so far (rows of history.csv).
    """
    import torch

    ckpt = {name: part.state_dict() if part is not None else {} for name, part in parts.items()}
    ckpt.update(epoch=len(history), state=dict(state), history=list(history))
    write_atomic(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(
    path: str | os.PathLike[str], parts: dict[str, Any], device: torch.device | str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Restore what :func:`save_checkpoint` wrote into ``parts`` (``weights_only=True``). Introduced in notebook 03.

    Returns:
        ``(state, history)``: the bookkeeping of :func:`new_state` and the epochs so far (the checkpoint, not
        history.csv, is the source of truth).
    """
    ckpt = _load(path, device)
    for name, part in parts.items():
        if part is not None:
            part.load_state_dict(ckpt[name])
    return {**new_state(), **ckpt["state"]}, list(ckpt["history"])


# --------------------------------------------------------------------------------------------------
# A run folder belongs to one run: refuse another's, one writer at a time
# --------------------------------------------------------------------------------------------------
RUN_FILES = (CONFIG, SPLIT, PLAN, HISTORY, LAST, BEST, METRICS, POSTPROCESSING, QC)
EVALUATION_FILES = ("evaluation.csv", "evaluation_summary.json")  # notebook 04's, about the run they sit beside
LOCK = ".heartseg.lock"
# what a resumed run may change; every other value must be the one its config.json recorded
RESUMABLE = frozenset({"resume", "overwrite", "max_epochs", "time_budget_min", "patience", "progress", "device"})
RESUMABLE |= {"num_workers", "data_dir", "run_dir"}  # a run folder copied elsewhere resumes there
RESUMABLE |= {"log_dir"}  # TensorBoard curves: where (and whether) they go is no part of the run


class RunDirError(ValueError):
    """A run folder that holds another run, a resume that does not match its run, or a folder another process writes."""


def _same(a: Any, b: Any) -> bool:
    """Equal as config.json stores them (tuples and lists alike)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def config_differences(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The values of ``new`` that differ from a run's ``config.json`` and that resuming may not change."""
    skip = set(RESUMABLE) | ({"model_kwargs"} if new.get("model_name") == "auto" else set())
    return [
        f"{key} {saved[key]!r} -> {value!r}"
        for key, value in new.items()
        if key in saved and key not in skip and value != "auto" and not _same(saved[key], value)
    ]


def check_run_dir(run_dir: str | os.PathLike[str], config: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a run folder that holds another run. Introduced in notebook 03.

    Args:
        run_dir: the run folder (it may not exist yet).
        config: the new run's ``config.json`` form (``"auto"`` values still unplanned).
        resume: continue the run in ``run_dir``: it needs a ``last.pt`` and a ``config.json`` of the same values.
        overwrite: replace the run in ``run_dir`` (:func:`clear_run` removes its files; other files stay).

    Raises:
        FileNotFoundError: ``resume`` without a ``last.pt``.
        RunDirError: the folder holds a run and neither flag allows it, or ``resume`` with other values.
    """
    run_dir = Path(run_dir)
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if LAST not in present:
            raise FileNotFoundError(f"resume=True but {run_dir / LAST} does not exist; run once with resume=False")
        differ = config_differences(read_json(run_dir / CONFIG), config) if CONFIG in present else []
        if differ:
            raise RunDirError(
                f"resume=True but {run_dir / CONFIG} records another run: {'; '.join(differ)}. Resume with the "
                "run's own values (only max_epochs, time_budget_min, patience, progress, device, log_dir may "
                "change), or train into a new run_dir"
            )
    elif present and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a training run ({', '.join(present)}): resume=True continues it, "
            "overwrite=True replaces it, or choose another run_dir"
        )


def clear_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """Remove the files of a previous run (``overwrite=True``); files that are not a run's stay. Returns the names."""
    run_dir = Path(run_dir)
    removed = [name for name in (*RUN_FILES, *EVALUATION_FILES) if (run_dir / name).is_file()]
    for name in removed:
        (run_dir / name).unlink()
    return removed


def _lock_holder(path: Path) -> dict[str, Any] | None:
    """The lock's ``{"pid", "host", "since"}``; None if it is unreadable (being written, or left half-written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_stale(holder: dict[str, Any] | None, path: Path) -> bool:
    """A lock whose process is gone on this machine (or one unreadable for over 10 s) can be taken over."""
    import socket
    import time

    if holder is None:
        return time.time() - path.stat().st_mtime > 10
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError):
        return False
    return False


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir/.heartseg.lock`` while a run writes: a second writer gets an error naming the holder.

    Introduced in notebook 03. A lock left by a process that no longer runs on this machine (killed, say) is taken
    over; one held by a live process, or by another machine, is not.
    """
    import socket
    import time

    path = Path(run_dir) / LOCK
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(path)
            if attempt == 0 and _is_stale(holder, path):
                path.unlink(missing_ok=True)
                continue
            who = f"process {holder['pid']} on {holder['host']} since {holder['since']}" if holder else "a process"
            raise RunDirError(
                f"{run_dir} is being written by {who} ({path}): wait for it to finish or stop it; if no training "
                f"is running there, delete {path}"
            ) from None
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
