"""Hostile and careless inputs against predict, export, validate_dataset and train, each a subprocess (issue 20).

Usage: python benchmarks/hostile_inputs.py [--workdir DIR] [--jobs 2] [--only SUBSTRING]

Builds a tiny synthetic dataset and a one-epoch run, then for every input builds its own folder (scans, DICOM
series, damaged run copies, foreign files), runs the command line tool on it and prints one row: the command, the
exit code, whether an input file changed, whether a traceback appeared, and the last stderr line. Inputs are the
files a command reads (they must never change); foreign files are other files that were there before (they may
change only with --overwrite). The last line sums up: inputs, data lost, overwrites, tracebacks, and results that
differ from the expected outcome (a refusal that exited 0 is a silent wrong result).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' tiny run settings are shared, not copied
from tests._tiny_run import TINY as _TINY  # noqa: E402

TINY = {**_TINY, "max_epochs": 1}  # an epoch in about a second on the CPU
VALIDATE = (
    "import sys; from heartseg_utils import cli, data; "
    "sys.exit(cli.run(lambda a: data.validate_dataset(a[0]), 'validate_dataset', sys.argv[1:]))"
)


@dataclass
class Setup:
    """What one hostile input needs: the command's arguments, the inputs to watch, the files written before."""

    args: list[str]
    inputs: list[Path]
    foreign: list[Path] = field(default_factory=list)


@dataclass
class Case:
    """One hostile input: its name, the tool, how to build it, and the expected outcome ("refuse" or "ok")."""

    name: str
    tool: str
    build: Callable[[Path, dict], Setup]
    expect: str = "refuse"


@dataclass
class Row:
    """The result of one case."""

    case: Case
    command: str
    code: int
    input_changed: bool
    overwrote: bool
    traceback: bool
    wrote: bool  # a refused command left a new file or folder behind
    last: str


# --------------------------------------------------------------------------------------------------- helpers
def digest(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under the given paths (links not followed; a missing path maps to "missing")."""
    out: dict[str, str] = {}
    for root in paths:
        files = [root] if not root.is_dir() or root.is_symlink() else sorted(p for p in root.rglob("*"))
        for p in files:
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif not p.exists():
                out[str(p)] = "missing"
    return out


def save(path: Path, array: np.ndarray, affine: np.ndarray, dtype: type = np.float32) -> Path:
    """Write ``array`` as NIfTI (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array), affine)
    image.set_data_dtype(dtype)
    nib.save(image, str(path))
    return path


def scan_copy(case_dir: Path, ctx: dict, name: str = "a.nii.gz", folder: str = "scans") -> Path:
    """A copy of the good test scan in ``case_dir/folder/name``."""
    target = case_dir / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
        shutil.copy(ctx["scan"], target)
    else:
        nib.save(nib.load(ctx["scan"]), str(target))
    return target


def edited_scan(case_dir: Path, ctx: dict, name: str, edit: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The good scan's voxels through ``edit`` (float32), on its affine."""
    img = nib.load(ctx["scan"])
    return save(case_dir / "scans" / name, edit(np.asanyarray(img.dataobj).astype(np.float32)), img.affine)


def with_pixdim(case_dir: Path, ctx: dict, name: str, zooms: tuple[float, float, float]) -> Path:
    """The good scan with its stored pixdim set to ``zooms`` (the sform keeps the real spacing)."""
    img = nib.load(ctx["scan"])
    image = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    image.header["pixdim"][1:4] = zooms
    path = case_dir / "scans" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def damaged(case_dir: Path, name: str, how: str) -> Path:
    """Damage a file in place: ``truncate`` (keep half), ``flip`` (16 bytes in the middle), ``junk``, ``empty``."""
    path = case_dir / name
    raw = bytearray(path.read_bytes())
    if how == "truncate":
        raw = raw[: len(raw) // 2]
    elif how == "flip":
        raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16
    elif how == "junk":
        raw = bytearray(os.urandom(2048))
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    return path


def run_copy(case_dir: Path, ctx: dict) -> Path:
    """A copy of the trained run in the case folder (to damage)."""
    return Path(shutil.copytree(ctx["run"], case_dir / "run", ignore=shutil.ignore_patterns("export")))


def predict_args(ctx: dict, inp: Path, out: Path, *extra: str, run: Path | None = None) -> list[str]:
    """``python -m heartseg_utils.predict`` with the usual flags."""
    run = run or ctx["run"]
    return ["-m", "heartseg_utils.predict", "--run_dir", str(run), "--input", str(inp), "--output", str(out),
            "--device", "cpu", "--no_progress", *extra]  # fmt: skip


def export_args(run: Path, *extra: str) -> list[str]:
    """``python -m heartseg_utils.export --no_program`` (the ONNX file only, for speed)."""
    return ["-m", "heartseg_utils.export", "--run_dir", str(run), "--no_program", *extra]


def first_image(root: Path) -> Path:
    """The first training image of an MSD folder."""
    return root / json.loads((root / "dataset.json").read_text())["training"][0]["image"]


# --------------------------------------------------------------------------------------------------- predict
def _p(inp: str, out: str, *extra: str, files: tuple = ("a.nii.gz",), pre: dict | None = None) -> Callable:
    """A predict case on ``scans/<files>``; ``pre`` writes foreign files first (relative path -> text)."""

    def build(d: Path, ctx: dict) -> Setup:
        for name in files:
            scan_copy(d, ctx, name)
        foreign = []
        for rel, text in (pre or {}).items():
            foreign.append(d / rel)
            foreign[-1].parent.mkdir(parents=True, exist_ok=True)
            foreign[-1].write_text(text)
        return Setup(predict_args(ctx, d / inp, d / out, *extra), [d / "scans"], foreign)

    return build


def p_output_symlink_to_input(d: Path, ctx: dict) -> Setup:
    a = scan_copy(d, ctx)
    (d / "mask.nii.gz").symlink_to(a)
    return Setup(predict_args(ctx, a, d / "mask.nii.gz", "--overwrite"), [d / "scans"])


def p_input_hardlink_of_output(d: Path, ctx: dict) -> Setup:
    a = scan_copy(d, ctx)
    os.link(a, d / "hard.nii.gz")
    return Setup(predict_args(ctx, d / "hard.nii.gz", a, "--overwrite"), [d / "scans", d / "hard.nii.gz"])


def _series(d: Path, ctx: dict) -> Path:
    from heartseg_utils import dicom

    img = nib.load(ctx["scan"])
    dicom.write_series(np.asanyarray(img.dataobj)[:, :, :6], img.affine, d / "series")
    return d / "series"


def _dicom(out: str, junk: bool = False, from_series: bool = False) -> Callable[[Path, dict], Setup]:
    """A DICOM case: predict the scan into the series folder (``out``), or the series itself (with a junk file)."""

    def build(d: Path, ctx: dict) -> Setup:
        a, series = scan_copy(d, ctx), _series(d, ctx)
        if junk:
            (series / "notes.txt").write_text("not DICOM")
        return Setup(predict_args(ctx, series if from_series else a, d / out), [d / "scans", series])

    return build


def p_output_is_folder(d: Path, ctx: dict) -> Setup:
    a = scan_copy(d, ctx)
    (d / "mask.nii.gz").mkdir()
    return Setup(predict_args(ctx, a, d / "mask.nii.gz", "--overwrite"), [d / "scans"])


def _voxels(edit: Callable[[np.ndarray], np.ndarray], name: str) -> Callable[[Path, dict], Setup]:
    def build(d: Path, ctx: dict) -> Setup:
        scan = edited_scan(d, ctx, name, edit)
        return Setup(predict_args(ctx, scan, d / "out"), [d / "scans"])

    return build


def _set(a: np.ndarray, index: tuple, value: float) -> np.ndarray:
    a[index] = value
    return a


def _pixdim(zooms: tuple[float, float, float]) -> Callable[[Path, dict], Setup]:
    def build(d: Path, ctx: dict) -> Setup:
        scan = with_pixdim(d, ctx, "pixdim.nii.gz", zooms)
        return Setup(predict_args(ctx, scan, d / "out"), [d / "scans"])

    return build


def p_4d_channel(d: Path, ctx: dict, channel: str = "1") -> Setup:
    scan = edited_scan(d, ctx, "cine.nii.gz", lambda a: np.stack([a, a * 0.5], -1))
    return Setup(predict_args(ctx, scan, d / "out", "--channel", channel), [d / "scans"])


def _file_damage(how: str, name: str = "a.nii.gz") -> Callable[[Path, dict], Setup]:
    def build(d: Path, ctx: dict) -> Setup:
        scan_copy(d, ctx, name)
        if how == "text":
            (d / "scans" / name).write_text("not an image\n" * 50)
        else:
            damaged(d / "scans", name, how)
        return Setup(predict_args(ctx, d / "scans" / name, d / "out"), [d / "scans"])

    return build


def p_huge_header(d: Path, ctx: dict) -> Setup:
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    (d / "scans").mkdir(parents=True, exist_ok=True)
    (d / "scans" / "huge.nii").write_bytes(header.binaryblock + b"\x00" * 4100)
    return Setup(predict_args(ctx, d / "scans" / "huge.nii", d / "out"), [d / "scans"])


def _input_path(kind: str) -> Callable[[Path, dict], Setup]:
    def build(d: Path, ctx: dict) -> Setup:
        d.mkdir(parents=True, exist_ok=True)
        target = d / "in.nii.gz"
        if kind == "loop":
            target.symlink_to(target)
        elif kind == "dangling":
            target.symlink_to(d / "gone.nii.gz")
        elif kind == "empty_folder":
            target = d / "empty"
            target.mkdir()
        elif kind == "mixed":
            scan_copy(d, ctx)
            (d / "scans" / "notes.txt").write_text("hello")
            target = d / "scans"
        elif kind == "text_file":
            target = d / "notes.txt"
            target.write_text("hello")
        return Setup(predict_args(ctx, target, d / "out"), [d])

    return build


def _run_damage(name: str, how: str, tool: str = "predict") -> Callable[[Path, dict], Setup]:
    """A case on a copy of the run with ``name`` damaged (``how`` as :func:`damaged`, ``list``, or ``none``)."""

    def build(d: Path, ctx: dict) -> Setup:
        a, run = scan_copy(d, ctx), run_copy(d, ctx)
        if how == "list":
            (run / name).write_text("[]")
        elif how != "none":
            damaged(run, name, how)
        args = predict_args(ctx, a, d / "out", run=run) if tool == "predict" else export_args(run)
        return Setup(args, [d / "scans", *run.iterdir()])  # the run's files (not what export adds)

    return build


def _run_path(kind: str, tool: str = "predict") -> Callable[[Path, dict], Setup]:
    def build(d: Path, ctx: dict) -> Setup:
        a = scan_copy(d, ctx)
        run = d / "run"
        if kind == "loop":
            run.symlink_to(run)
        args = predict_args(ctx, a, d / "out", run=run) if tool == "predict" else export_args(run)
        return Setup(args, [d / "scans"])

    return build


def e_foreign_out_dir(d: Path, ctx: dict, *extra: str) -> Setup:
    proj = d / "proj"
    proj.mkdir(parents=True)
    (proj / "README.md").write_text("my project")
    (proj / "export.json").write_text('{"mine": true}')
    return Setup(export_args(ctx["run"], "--out_dir", str(proj), *extra), [ctx["run"]], [proj])


def e_own_out_dir(d: Path, ctx: dict) -> Setup:
    run = run_copy(d, ctx)
    subprocess.run([sys.executable, *export_args(run)], cwd=REPO, env=_env(), capture_output=True, check=True)
    return Setup(export_args(run), [run / "config.json", run / "best_model.pt"], [run / "export" / "README.md"])


def e_out_dir_is_file(d: Path, ctx: dict) -> Setup:
    d.mkdir(parents=True, exist_ok=True)
    (d / "target").write_text("a file")
    return Setup(export_args(ctx["run"], "--out_dir", str(d / "target")), [ctx["run"]], [d / "target"])


def e_out_dir_loop(d: Path, ctx: dict) -> Setup:
    d.mkdir(parents=True, exist_ok=True)
    (d / "loop").symlink_to(d / "loop")
    return Setup(export_args(ctx["run"], "--out_dir", str(d / "loop")), [ctx["run"]])


# --------------------------------------------------------------------------------------------------- validate
def _dataset(edit: Callable[[Path], None]) -> Callable[[Path, dict], Setup]:
    def build(d: Path, ctx: dict) -> Setup:
        root = Path(shutil.copytree(ctx["msd"], d / "msd"))
        edit(root)
        return Setup(["-c", VALIDATE, str(root)], [d])

    return build


def _image_edit(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = first_image(root)
        img = nib.load(path)
        save(path, edit(np.asanyarray(img.dataobj).astype(np.float32)), img.affine)

    return apply


def _outside(absolute: bool) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        shutil.copy(first_image(root), root.parent / "elsewhere.nii.gz")
        where = str(root.parent / "elsewhere.nii.gz") if absolute else "../elsewhere.nii.gz"
        meta = json.loads((root / "dataset.json").read_text())
        meta["training"][0]["image"] = where
        (root / "dataset.json").write_text(json.dumps(meta))

    return apply


def _looping_image(root: Path) -> None:
    path = first_image(root)
    path.unlink()
    path.symlink_to(path)


def _pixdim_zero(root: Path) -> None:
    path = first_image(root)
    img = nib.load(path)
    image = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    image.header["pixdim"][1:4] = (1.25, 1.25, 0.0)
    nib.save(image, str(path))


def v_loop_folder(d: Path, ctx: dict) -> Setup:
    d.mkdir(parents=True, exist_ok=True)
    (d / "msd").symlink_to(d / "msd")
    return Setup(["-c", VALIDATE, str(d / "msd")], [d])


# --------------------------------------------------------------------------------------------------- the list
def train_args(ctx: dict, run: Path, *extra: str, data_dir: Path | None = None) -> list[str]:
    """``-m heartseg_utils.train`` with the tiny run's settings into ``run`` (flags as the command line takes them)."""
    flags = {**TINY, "data_dir": str(data_dir or ctx["msd"]), "run_dir": str(run)}
    args = ["-m", "heartseg_utils.train"]
    for key, value in flags.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return [*args, *extra]


def t_finished_run(*extra: str, continues: bool = False) -> Callable[[Path, dict], Setup]:
    """A copy of the finished tiny run as run_dir. Its files are inputs that must not change, unless the command
    replaces the run (``--overwrite true``: foreign files) or legitimately continues it (``continues``: unwatched)."""

    def build(d: Path, ctx: dict) -> Setup:
        run = run_copy(d, ctx)
        watched = [run / name for name in ("config.json", "best_model.pt", "last.pt", "history.csv")]
        if continues:
            return Setup(train_args(ctx, run, *extra), [])
        replaces = "--overwrite" in extra
        return Setup(train_args(ctx, run, *extra), [] if replaces else watched, watched if replaces else [])

    return build


def t_locked(alive: bool) -> Callable[[Path, dict], Setup]:
    """A run_dir whose lock names a live process (this one) or one that has ended."""

    def build(d: Path, ctx: dict) -> Setup:
        import socket

        pid = os.getpid()
        if not alive:
            ended = subprocess.Popen([sys.executable, "-c", "pass"])
            ended.wait()
            pid = ended.pid
        run = d / "run"
        run.mkdir()
        (run / ".heartseg.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "now"}))
        return Setup(train_args(ctx, run), [])

    return build


def t_bad_dataset(d: Path, ctx: dict) -> Setup:
    """A data folder whose first training image is 4D with two channels: no run_dir may appear."""
    root = d / "msd"
    shutil.copytree(ctx["msd"], root)
    image = first_image(root)
    img = nib.load(str(image))
    save(image, np.stack([img.get_fdata()] * 2, -1), img.affine)
    return Setup(train_args(ctx, d / "run", data_dir=root), [root])


A_TO = ("scans/a.nii.gz",)  # the one-scan input
CONFIG = {"run_c/config.json": '{"mine": true}'}
REPORT = {"masks/a.heartseg.json": '{"edited": true}'}
MASK = {"m.nii.gz": "an earlier mask"}


def cases() -> list[Case]:
    """Every hostile input, with the tool it is run against and the expected outcome."""
    nan = _voxels(lambda a: _set(a, (slice(10, 12), 10, 10), np.nan), "nan.nii.gz")
    p = [
        Case("output = input file", "predict", _p("scans/a.nii.gz", "scans/a.nii.gz")),
        Case("output = folder of the input file", "predict", _p("scans/a.nii.gz", "scans")),
        Case("input folder onto itself", "predict", _p("scans", "scans", files=("a.nii.gz", "b.nii.gz"))),
        Case("output inside the input folder", "predict", _p("scans", "scans/masks")),
        Case("output symlink to the input (--overwrite)", "predict", p_output_symlink_to_input),
        Case("input hard link of the output (--overwrite)", "predict", p_input_hardlink_of_output),
        Case("mask config.nii.gz beside config.json", "predict", _p(*A_TO, "run_c/config.nii.gz", pre=CONFIG), "ok"),
        Case("scan.nii and scan.nii.gz", "predict", _p("scans", "masks", files=("a.nii.gz", "a.nii"))),
        Case("existing mask", "predict", _p(*A_TO, "m.nii.gz", pre=MASK)),
        Case(
            "existing mask, --overwrite", "predict", _p(*A_TO, "m.nii.gz", "--overwrite", pre={"m.nii.gz": "x"}), "ok"
        ),
        Case("edited report in the output folder", "predict", _p("scans", "masks", pre=REPORT)),
        Case("output = DICOM series folder", "predict", _dicom("series")),
        Case("output inside a DICOM series folder", "predict", _dicom("series/mask.nii.gz")),
        Case("DICOM series (control)", "predict", _dicom("mask.nii.gz", from_series=True), "ok"),
        Case("DICOM series with a junk file", "predict", _dicom("mask.nii.gz", junk=True, from_series=True)),
        Case("output folder's parent is a file", "predict", _p(*A_TO, "f/m.nii.gz", pre={"f": "a file"})),
        Case("output mask path is a folder", "predict", p_output_is_folder),
        Case("NaN voxels", "predict", nan),
        Case("Inf voxels", "predict", _voxels(lambda a: _set(a, (0, 0, 0), np.inf), "inf.nii.gz")),
        Case("pixdim 0", "predict", _pixdim((1.25, 1.25, 0.0))),
        Case("negative pixdim", "predict", _pixdim((1.25, -1.25, 1.37))),
        Case("NaN pixdim", "predict", _pixdim((1.25, float("nan"), 1.37))),
        Case("2D image", "predict", _voxels(lambda a: a[:, :, 0], "flat.nii.gz")),
        Case("4D, 2 channels, no --channel", "predict", _voxels(lambda a: np.stack([a, a], -1), "cine.nii.gz")),
        Case("4D, --channel 1", "predict", p_4d_channel, "ok"),
        Case("4D, --channel 5", "predict", lambda d, c: p_4d_channel(d, c, "5")),
        Case("4D, one frame", "predict", _voxels(lambda a: a[..., None], "one.nii.gz"), "ok"),
        Case("5D image", "predict", _voxels(lambda a: np.stack([np.stack([a, a], -1)] * 2, -1), "five.nii.gz")),
        Case("blank (constant) image", "predict", _voxels(lambda a: a * 0, "blank.nii.gz"), "ok"),
        Case("empty .nii.gz", "predict", _file_damage("empty")),
        Case("truncated .nii.gz", "predict", _file_damage("truncate")),
        Case("truncated .nii", "predict", _file_damage("truncate", "a.nii")),
        Case("flipped bytes (gzip CRC)", "predict", _file_damage("flip")),
        Case("random bytes .nii.gz", "predict", _file_damage("junk")),
        Case("plain text .nii.gz", "predict", _file_damage("text")),
        Case("plain text .nii", "predict", _file_damage("text", "a.nii")),
        Case("header claims 4000^3 voxels", "predict", p_huge_header),
        Case("input symlink loop", "predict", _input_path("loop")),
        Case("input dangling symlink", "predict", _input_path("dangling")),
        Case("input missing", "predict", _input_path("missing")),
        Case("input empty folder", "predict", _input_path("empty_folder")),
        Case("input folder mixing NIfTI and text", "predict", _input_path("mixed")),
        Case("input a text file", "predict", _input_path("text_file")),
        Case("run_dir symlink loop", "predict", _run_path("loop")),
        Case("run_dir missing", "predict", _run_path("missing")),
        Case("truncated best_model.pt", "predict", _run_damage("best_model.pt", "truncate")),
        Case("random-bytes best_model.pt", "predict", _run_damage("best_model.pt", "junk")),
        Case("truncated config.json", "predict", _run_damage("config.json", "truncate")),
        Case("config.json = []", "predict", _run_damage("config.json", "list")),
        Case("empty config.json", "predict", _run_damage("config.json", "empty")),
        Case("truncated metrics.json", "predict", _run_damage("metrics.json", "truncate")),
        Case("truncated postprocessing.json", "predict", _run_damage("postprocessing.json", "truncate")),
        Case("good scan (control)", "predict", _p(*A_TO, "masks"), "ok"),
    ]
    e = [
        Case("--out_dir foreign, non-empty", "export", e_foreign_out_dir),
        Case("--out_dir foreign with --overwrite", "export", lambda d, c: e_foreign_out_dir(d, c, "--overwrite"), "ok"),
        Case("--out_dir an earlier export", "export", e_own_out_dir, "ok"),
        Case("--out_dir is a file", "export", e_out_dir_is_file),
        Case("--out_dir symlink loop", "export", e_out_dir_loop),
        Case("truncated best_model.pt", "export", _run_damage("best_model.pt", "truncate", "export")),
        Case("truncated config.json", "export", _run_damage("config.json", "truncate", "export")),
        Case("truncated metrics.json", "export", _run_damage("metrics.json", "truncate", "export")),
        Case("run_dir missing", "export", _run_path("missing", "export")),
        Case("run_dir symlink loop", "export", _run_path("loop", "export")),
        Case("good run (control)", "export", _run_damage("", "none", "export"), "ok"),
    ]
    v = [
        Case("4D training image, 2 channels", "validate", _dataset(_image_edit(lambda a: np.stack([a, a], -1)))),
        Case("4D training image, one frame", "validate", _dataset(_image_edit(lambda a: a[..., None])), "ok"),
        Case("2D training image", "validate", _dataset(_image_edit(lambda a: a[:, :, 0]))),
        Case("dataset.json entry ../", "validate", _dataset(_outside(False))),
        Case("dataset.json entry absolute outside", "validate", _dataset(_outside(True))),
        Case("data folder symlink loop", "validate", v_loop_folder),
        Case("listed image symlink loop", "validate", _dataset(_looping_image)),
        Case("NaN training image", "validate", _dataset(_image_edit(lambda a: _set(a, (1, 1, 1), np.nan)))),
        Case("pixdim 0 training image", "validate", _dataset(_pixdim_zero)),
        Case("truncated training image", "validate", _dataset(lambda r: damaged(r, str(first_image(r)), "truncate"))),
        Case("truncated dataset.json", "validate", _dataset(lambda r: damaged(r, "dataset.json", "truncate"))),
        Case("good dataset (control)", "validate", _dataset(lambda r: None), "ok"),
    ]
    t = [
        Case("run_dir holds a finished run", "train", t_finished_run()),
        Case("finished run, --seed 7 --resume true", "train", t_finished_run("--seed", "7", "--resume", "true")),
        Case("finished run, --overwrite true", "train", t_finished_run("--overwrite", "true"), "ok"),
        Case(
            "finished run, --resume true --max_epochs 2",
            "train",
            t_finished_run("--resume", "true", "--max_epochs", "2", continues=True),
            "ok",
        ),
        Case(
            "--resume true without last.pt",
            "train",
            lambda d, c: Setup(train_args(c, d / "run", "--resume", "true"), []),
        ),
        Case("run_dir locked by a live process", "train", t_locked(True)),
        Case("run_dir locked by an ended process", "train", t_locked(False), "ok"),
        Case("4D two-channel training image", "train", t_bad_dataset),
        Case("--max_epochs ten", "train", lambda d, c: Setup(train_args(c, d / "run", "--max_epochs", "ten"), [])),
    ]
    return p + e + v + t


# --------------------------------------------------------------------------------------------------- runner
def _env() -> dict[str, str]:
    """The subprocess environment: this checkout first on the path, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def prepare(work: Path) -> dict:
    """The tiny synthetic dataset, its test scan and a one-epoch run (reused when ``work`` holds them)."""
    from heartseg_utils.synthetic import make_synthetic_dataset

    msd = make_synthetic_dataset(work / "msd", n_train=6, n_test=1, seed=3, shape=(64, 64, 48))
    run = work / "run"
    if not (run / "best_model.pt").is_file():
        from heartseg_utils.train import run_training

        run_training({**TINY, "data_dir": str(msd), "run_dir": str(run), "overwrite": True})
    return {"msd": msd, "run": run, "scan": min((msd / "imagesTs").glob("*.nii.gz"))}


def _short(args: list[str], case_dir: Path, ctx: dict) -> str:
    """The command with ``P``/``E``/``V`` for the tool and paths relative to the case folder."""
    text = " ".join(args)
    text = text.replace(f"-m heartseg_utils.predict --run_dir {ctx['run']} ", "P ")
    text = text.replace("-m heartseg_utils.predict ", "P ").replace("-m heartseg_utils.export ", "E ")
    text = text.replace(f"-c {VALIDATE} ", "V ").replace(" --device cpu --no_progress", "")
    return text.replace(f"{case_dir}/", "").replace(str(ctx["run"]), "RUN")


def _tree(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed)."""
    return {os.path.join(top, n) for top, dirs, files in os.walk(root) for n in dirs + files}


def run_case(case: Case, work: Path, ctx: dict) -> Row:
    """Build one case in its own folder, run its command, and compare the watched files before and after."""
    case_dir = work / "cases" / "".join(c if c.isalnum() else "_" for c in f"{case.tool}_{case.name}")
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir(parents=True)
    setup = case.build(case_dir, ctx)
    inputs_before, foreign_before, tree = digest(setup.inputs), digest(setup.foreign), _tree(case_dir)
    done = subprocess.run(
        [sys.executable, *setup.args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    inputs_after, foreign_after, written = digest(setup.inputs), digest(setup.foreign), _tree(case_dir) - tree
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return Row(
        case=case,
        command=_short(setup.args, case_dir, ctx),
        code=done.returncode,
        input_changed=inputs_after != inputs_before,
        overwrote=foreign_after != foreign_before and "--overwrite" not in setup.args,
        traceback="Traceback" in done.stderr,
        wrote=bool(written) and done.returncode != 0,
        last=(lines[-1] if lines else "").replace("|", "/")[:150],
    )


def verdict(row: Row) -> str:
    """``as expected`` or what went wrong: a refusal that exited 0 is a silent result; exit codes other than 2."""
    if row.case.expect == "ok":
        return "as expected" if row.code == 0 else f"failed (exit {row.code}), expected success"
    if row.code == 0:
        return "NOT refused (silent result)"
    return "as expected" if row.code == 2 else f"refused with exit {row.code}, expected 2"


def main() -> None:
    """Build every case, run them (``--jobs`` at a time), print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="", help="where to build (default: a temp folder, removed after)")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at the same time")
    parser.add_argument("--only", default="", help="run only the cases whose tool or name contains this")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hostile-"))
    t0 = time.perf_counter()
    ctx = prepare(work)
    chosen = [c for c in cases() if args.only.lower() in f"{c.tool} {c.name}".lower()]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda c: run_case(c, work, ctx), chosen))
    print("| # | tool | input | command | exit | input changed | traceback | outcome | last stderr line |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(
            f"| {i} | {r.case.tool} | {r.case.name} | `{r.command}` | {r.code} | {'YES' if r.input_changed else 'no'} "
            f"| {'YES' if r.traceback else 'no'} | {verdict(r)} | {r.last} |"
        )
    lost, over, wrote = (sum(getattr(r, k) for r in rows) for k in ("input_changed", "overwrote", "wrote"))
    tracebacks, unexpected = sum(r.traceback for r in rows), sum(verdict(r) != "as expected" for r in rows)
    print(
        f"\nsummary: {len(rows)} inputs, {lost} with data lost, {over} overwrites without --overwrite, {wrote} "
        "refusals that wrote files, "
        f"{tracebacks} tracebacks, {unexpected} not as expected ({time.perf_counter() - t0:.0f} s)"
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
