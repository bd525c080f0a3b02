"""Predict new scans with a finished run: NIfTI files, a DICOM series or a folder of NIfTI files.

Introduced in notebook 07. From the command line::

    python -m heartseg_utils.predict --run_dir runs/03_train --input scan.nii.gz --output scan_mask.nii.gz
    python -m heartseg_utils.predict --run_dir runs/03_train --input dicom_folder/ --output mask.nii.gz --tta
    python -m heartseg_utils.predict --run_dir runs/03_train --input imagesTs/ --output predictions/

Each mask is written as NIfTI (uint8, 1 = left atrium; a multi-class run writes a label map with the dataset's
label values and reports each class's volume) on the input's own voxel grid and affine: a NIfTI input's
shape and affine, or for a DICOM series the grid of its slices sorted along their normal (:mod:`heartseg_utils.dicom`).
Beside each mask a JSON report ``<case>.heartseg.json`` holds the foreground volume in mL, the warnings of
``metrics.sanity_check`` and the run's quality control (``qc.json``): the quality score, the "needs review" flag
and its reasons, also printed as a warning line for a flagged scan. The model, its preprocessing and the sliding
window all come from ``run_dir`` (``inference.load_run`` and ``inference.predict_case``): a DICOM series is first
converted to a temporary NIfTI with the series' geometry.

Inputs are never modified, and nothing is written before every check has passed: an output that is, or is inside,
the input; a folder holding a DICOM series; an existing mask or report (unless ``--overwrite``); two inputs with
one case name; a scan that fails :mod:`heartseg_utils.scans` (unreadable, truncated, 4D without ``--channel``,
NaN/Inf voxels, spacing 0); a damaged run folder. From the command line each ends in one line naming the file,
the problem and the fix (exit code 2; the traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from heartseg_utils import cli, runs, scans
from heartseg_utils.data import case_name
from heartseg_utils.scans import check_exists, is_link_loop

NIFTI_SUFFIXES = (".nii", ".nii.gz")
REPORT_SUFFIX = ".heartseg.json"
CHANNEL_HINT = "choose the channel to segment with --channel N (channel=N in Python), counting from 0."


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """True if the file name ends in .nii or .nii.gz. Introduced in notebook 07."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def find_inputs(input_path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """Classify ``--input``: one NIfTI file, a folder of NIfTI files, or a folder holding one DICOM series.

    Introduced in notebook 07.

    Args:
        input_path: a .nii/.nii.gz file, or a folder.

    Returns:
        ``[("nifti", file), ...]`` (one or more NIfTI files) or ``[("dicom", folder)]``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a symbolic link loop, an empty folder, a file that is not NIfTI, or a folder that mixes NIfTI and
            other files.
    """
    from heartseg_utils.dicom import series_files

    path = check_exists(input_path, "--input", kind="any")
    if path.is_file():
        if not is_nifti(path):
            raise ValueError(
                f"{path} is not a NIfTI file (.nii or .nii.gz): pass a NIfTI file, a folder of NIfTI "
                "files, or the folder that holds one DICOM series"
            )
        return [("nifti", path)]
    files = series_files(path)  # raises for an empty folder
    nifti = [f for f in files if is_nifti(f)]
    if not nifti:
        return [("dicom", path)]
    if len(nifti) < len(files):
        other = next(f for f in files if not is_nifti(f))
        raise ValueError(
            f"{path} mixes NIfTI files with other files (e.g. {other.name}): keep a folder of NIfTI "
            "files, or a folder with one DICOM series, apart"
        )
    return [("nifti", f) for f in nifti]


def output_paths(inputs: list[tuple[str, Path]], output: str | os.PathLike[str]) -> list[Path]:
    """Where each mask goes: ``--output`` itself for one input named .nii/.nii.gz, else ``output/<case>.nii.gz``.

    Introduced in notebook 07.

    Raises:
        ValueError: several inputs for one output file, or two inputs with one case name (``scan.nii`` and
            ``scan.nii.gz``), which would write one mask.
    """
    out = Path(output).expanduser()
    if is_nifti(out):
        if len(inputs) > 1:
            raise ValueError(f"--input holds {len(inputs)} images but --output {out} is one file: give a folder")
        return [out]
    by_case: dict[str, Path] = {}
    for _, path in inputs:
        case = case_name(path)
        if case in by_case:
            raise ValueError(
                f"{by_case[case]} and {path} are both case {case!r}: they would write one mask, "
                f"{out / (case + '.nii.gz')}. Keep one of them in the folder, or rename the other."
            )
        by_case[case] = path
    return [out / f"{case}.nii.gz" for case in by_case]


def report_path(mask_path: str | os.PathLike[str]) -> Path:
    """The JSON report beside a mask: ``<case>.heartseg.json`` for ``<case>.nii.gz``. Introduced in notebook 07.

    The ``.heartseg.json`` ending keeps the report off any other JSON file (a mask named ``config.nii.gz`` in a run
    folder must not replace its ``config.json``).
    """
    return Path(mask_path).with_name(f"{case_name(mask_path)}{REPORT_SUFFIX}")


def _identity(path: Path) -> tuple[int, int] | None:
    """A file's (device, inode), to recognise hard links; None where it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _refuse_input_target(target: Path, input_path: Path, sources: dict[Any, Path]) -> None:
    """An output file must be none of the inputs and lie outside an input folder.

    ``sources`` maps each input's resolved path and its (device, inode) to the input, so links are caught too.
    """
    resolved = target.resolve()
    if input_path.is_dir() and input_path.resolve() in resolved.parents:
        raise ValueError(
            f"--output {target} is inside the input folder {input_path}: predict never writes into its input. "
            "Choose an --output outside it (e.g. a sibling folder)."
        )
    source = sources.get(resolved) or sources.get(_identity(target) or resolved)
    if source is not None:
        raise ValueError(
            f"--output {target} is the input {source}: writing there would destroy the scan. "
            "Choose another --output (e.g. a masks/ folder); --overwrite never replaces an input."
        )


def _refuse_output_folder(folder: Path) -> None:
    """The mask's folder must be a folder (or not exist yet) and must not hold a DICOM series."""
    from heartseg_utils.dicom import holds_dicom

    existing = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--output needs the folder {folder}, but {existing} is a file: choose another --output")
    if holds_dicom(folder):
        raise ValueError(
            f"--output folder {folder} holds a DICOM series: a mask written there would make the folder unreadable "
            "as a series. Write the mask to another folder."
        )


def check_outputs(
    input_path: str | os.PathLike[str],
    inputs: list[tuple[str, Path]],
    outputs: list[Path],
    *,
    overwrite: bool = False,
) -> None:
    """Refuse outputs that would destroy an input or replace a file, before anything is read or written.

    Introduced in notebook 07.

    Args:
        input_path: ``--input`` as given (a file or a folder).
        inputs: from :func:`find_inputs`.
        outputs: the masks, from :func:`output_paths` (each report is :func:`report_path` of its mask).
        overwrite: allow replacing existing masks and reports (never an input).

    Raises:
        ValueError: an output that is an input or lies inside the input folder, or a folder holding a DICOM series.
        FileExistsError: an existing mask or report, without ``overwrite``.
    """
    given = Path(input_path).expanduser()
    for path in {p for out in outputs for p in (out, *out.parents)}:
        if is_link_loop(path):
            raise ValueError(f"--output {path} is a symbolic link loop (it points back at itself): fix the link")
    sources: dict[Any, Path] = {}
    for source in [given, *(path for _, path in inputs)]:
        sources[source.resolve()] = source
        sources[_identity(source) or source.resolve()] = source
    for out in outputs:
        for target in (out, report_path(out)):
            _refuse_input_target(target, given, sources)
            if target.is_dir():
                raise ValueError(f"--output {target} is a folder, where predict would write a file: remove it")
    for folder in {out.parent for out in outputs}:
        _refuse_output_folder(folder)
    existing = [t for out in outputs for t in (out, report_path(out)) if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise FileExistsError(
            f"{existing[0]}{more} already exist(s): predict does not replace masks or reports. Pass --overwrite "
            "(overwrite=True) to replace them, or choose another --output."
        )


def prepare_input(kind: str, input_path: Path, tmp: Path, *, channel: int | None = None) -> Path:
    """Check one input with :mod:`heartseg_utils.scans` and return the 3D NIfTI file the network reads.

    Introduced in notebook 07. A 3D NIfTI is read as it is; a DICOM series is converted to ``tmp/series.nii.gz``
    (the series' geometry, :mod:`heartseg_utils.dicom`); the chosen channel of a 4D scan is saved as a 3D NIfTI in
    ``tmp``. Nothing is written beside the input.

    Args:
        kind: ``"nifti"`` or ``"dicom"``.
        input_path: the NIfTI file or the series' folder.
        tmp: an empty scratch folder for this input.
        channel: the channel of a 4D scan (None refuses a scan with several channels).

    Returns:
        The 3D NIfTI file to predict.

    Raises:
        scans.ScanError: unreadable, truncated, an absurd header, several channels and none chosen, NaN/Inf voxels,
            spacing that is not positive.
    """
    import nibabel as nib

    from heartseg_utils.dicom import read_series

    tmp.mkdir(parents=True, exist_ok=True)
    if kind == "dicom":
        volume, affine = read_series(input_path)
        image = nib.Nifti1Image(volume, affine)
        scans.check_header(image, input_path, "DICOM series")
        scans.check_finite(volume, input_path, "DICOM series")
        nib.save(image, str(tmp / "series.nii.gz"))
        return tmp / "series.nii.gz"
    info, voxels = scans.check_scan(input_path, "Scan", channel=channel, hint=CHANNEL_HINT)
    if len(info.shape) == 3:
        return Path(input_path)
    header = nib.load(str(input_path)).header
    image = nib.Nifti1Image(np.asarray(voxels, dtype=np.float32), header.get_best_affine(), header)
    image.set_data_dtype(np.float32)
    nib.save(image, str(tmp / f"channel{info.channel or 0}.nii.gz"))
    return tmp / f"channel{info.channel or 0}.nii.gz"


def _predict_prepared(
    model: Any, config: dict[str, Any], kind: str, input_path: Path, image: Path, out_path: Path, **options: Any
) -> dict[str, Any]:
    """Predict a prepared 3D NIfTI (:func:`prepare_input`), write the mask and the report; return the report."""
    from heartseg_utils import inference, metrics

    t0 = time.perf_counter()
    tta, keep_largest = bool(options.get("tta")), options.get("keep_largest")
    keep_largest = [int(v) for v in keep_largest] if isinstance(keep_largest, (list, tuple)) else bool(keep_largest)
    record = options.get("qc")
    result = inference.predict_case(model, config, image, tta=tta, keep_largest=keep_largest, members=bool(record))
    runs.write_atomic(out_path, lambda tmp: inference.save_prediction(result["mask"], image, tmp))
    report = {
        "input": str(input_path),
        "kind": kind,
        "mask": str(out_path),
        "volume_ml": round(metrics.volume_ml(result["mask"], result["spacing"]), 3),
        "n_voxels": int(np.count_nonzero(result["mask"])),
        "shape": list(result["mask"].shape),
        "spacing_mm": [round(s, 4) for s in result["spacing"]],
        "warnings": metrics.sanity_check(result["mask"], max_fraction=size_rule(config, record)),
        "tta": tta,
        "keep_largest": keep_largest,
        "channel": options.get("channel"),
        "precision": result["precision"],
        "seconds": round(time.perf_counter() - t0 + float(options.get("seconds", 0.0)), 2),
        **class_volumes(result["mask"], result["spacing"], config),
    }
    if options.get("run_dir") is not None:
        report["run_dir"] = str(options["run_dir"])
    report.update(quality_report(record, result, image, options.get("run_dir")))
    runs.write_json(report, report_path(out_path))
    if report["needs_review"]:
        print(review_warning(report), file=sys.stderr)
    return report


def size_rule(config: dict[str, Any], record: dict[str, Any] | None) -> float | None:
    """``metrics.sanity_check``'s ``max_fraction`` for a run: the fixed left-atrium rule (5 %) only where nothing
    better is known. A run with ``qc.json`` judges the size against its own training labels' range (``qc``), and a
    multi-class run's structures (a whole heart fills much of a cine scan) are not an atrium: None, no fixed rule."""
    if record is not None or config.get("label_mode") == "multiclass":
        return None
    return 0.05


def class_volumes(mask: np.ndarray, spacing: Any, config: dict[str, Any]) -> dict[str, Any]:
    """A multi-class run's report entry ``classes``: ``{name: {"label_value", "volume_ml", "n_voxels"}}``.

    Introduced in notebook 07. The label map holds the dataset's label values (``config.json`` ``label_values``);
    a binary run's report has no ``classes`` (its ``volume_ml`` is the one structure's).
    """
    from heartseg_utils.config import class_names
    from heartseg_utils.metrics import volume_ml

    if config.get("label_mode") != "multiclass":
        return {}
    return {
        "classes": {
            name: {
                "label_value": value,
                "volume_ml": round(volume_ml(mask == value, spacing), 3),
                "n_voxels": int(np.count_nonzero(mask == value)),
            }
            for value, name in class_names(config).items()
        }
    }


# ---- quality control (issue 23): the run's qc.json scores each scan ------------------------------
def quality_report(
    record: dict[str, Any] | None, result: dict[str, Any], image: Path, run_dir: Any = None
) -> dict[str, Any]:
    """The report's QC keys: ``quality_score``, ``needs_review``, ``review_reasons`` and the details in ``qc``.

    With the run's ``qc.json`` (``record``) the scan is scored as the validation cases were
    (``qc_run.assess_prediction``: each class of a multi-class run on its own); a run without one gives None for
    the score and the flag, and ``qc.fitted`` false with the reason.
    """
    from heartseg_utils import qc_run

    if record is None:
        block = qc_run.not_fitted(run_dir if run_dir is not None else "the run")
    else:
        block = qc_run.assess_prediction(record, result, qc_run.read_scan(image)[0])
    head = {"quality_score": block["quality_score"], "needs_review": block["needs_review"]}
    return {**head, "review_reasons": block["reasons"], "qc": block}


def review_warning(report: dict[str, Any]) -> str:
    """The one line printed for a scan that needs review: the scan, its score and every reason."""
    score = report.get("quality_score")
    scored = f" (quality score {score:.2f})" if score is not None else ""
    return f"WARNING: {report['input']} needs review{scored}: " + "; ".join(report["review_reasons"])


def predict_one(
    model: Any,
    config: dict[str, Any],
    kind: str,
    input_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    tta: bool = False,
    keep_largest: bool = False,
    channel: int | None = None,
    overwrite: bool = False,
    qc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict one NIfTI file or DICOM series, write the mask and its JSON report. Introduced in notebook 07.

    Args:
        model, config: from ``inference.load_run``.
        kind: ``"nifti"`` or ``"dicom"`` (as :func:`find_inputs` says).
        input_path: the NIfTI file or the DICOM series' folder.
        out_path: the mask to write (.nii.gz); the report goes to :func:`report_path`.
        tta, keep_largest: as in ``inference.predict_case``.
        channel: the channel of a 4D scan (see :func:`prepare_input`).
        overwrite: replace an existing mask/report (see :func:`check_outputs`; an input is never replaced).
        qc: the run's ``qc.json`` (``runs.read_qc``) to score the scan with; None = QC not fitted.

    Returns:
        The report: ``input``, ``kind``, ``mask``, ``volume_ml``, ``n_voxels``, ``shape``, ``spacing_mm``,
        ``warnings``, ``tta``, ``keep_largest``, ``channel``, ``precision`` (``bfloat16`` or ``float32``),
        ``seconds``, and the QC keys of :func:`quality_report`.
    """
    from heartseg_utils.transforms import quiet_readers

    t0 = time.perf_counter()
    source, out = Path(input_path).expanduser(), Path(out_path).expanduser()
    check_outputs(source, [(kind, source)], [out], overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="heartseg_predict_") as tmp, quiet_readers():
        image = prepare_input(kind, source, Path(tmp), channel=channel)
        return _predict_prepared(
            model,
            config,
            kind,
            source,
            image,
            out,
            tta=tta,
            keep_largest=keep_largest,
            channel=channel,
            seconds=time.perf_counter() - t0,
            qc=qc,
        )


def predict(
    run_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    tta: bool | None = None,
    keep_largest: bool | None = None,
    device: str = "auto",
    progress: bool = True,
    channel: int | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Predict every image of ``input_path`` (see :func:`find_inputs`) with a run; what the command line runs.

    Introduced in notebook 07. Every check runs before anything is written: the outputs (:func:`check_outputs`),
    every input (:func:`prepare_input`) and the run's files (``inference.load_run``); a refusal writes nothing.

    Args:
        run_dir: a finished training run (``config.json`` and ``best_model.pt``).
        input_path: a NIfTI file, a folder of NIfTI files, or a folder holding one DICOM series.
        output: a .nii/.nii.gz file for one input, else a folder (masks named after the inputs).
        tta, keep_largest: as in ``inference.predict_case``; None (the default) follows the run's own decision
            from its validation cases (``postprocessing.json``, see ``inference.run_tta`` and ``run_keep_largest``).
        device: "auto", "cpu" or "cuda".
        progress: show a tqdm bar over the inputs.
        channel: the channel to segment in 4D scans (None refuses a scan with several channels).
        overwrite: replace existing masks and reports (an input is never replaced).

    Returns:
        One report per input (:func:`predict_one`), each also written as ``<case>.heartseg.json`` beside its mask,
        with the run's quality control (:func:`quality_report`); a scan that needs review prints a warning line.
    """
    from tqdm.auto import tqdm

    from heartseg_utils.inference import load_run, run_keep_largest, run_tta
    from heartseg_utils.transforms import quiet_readers

    inputs = find_inputs(input_path)
    outputs = output_paths(inputs, output)
    check_outputs(input_path, inputs, outputs, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="heartseg_predict_") as tmp, quiet_readers():
        images = [prepare_input(k, p, Path(tmp) / str(i), channel=channel) for i, (k, p) in enumerate(inputs)]
        model, config = load_run(run_dir, device)
        keep_largest = run_keep_largest(run_dir) if keep_largest is None else keep_largest
        tta = run_tta(run_dir) if tta is None else tta
        options = {"tta": tta, "keep_largest": keep_largest, "channel": channel, "run_dir": run_dir}
        options["qc"] = runs.read_qc(run_dir)
        bar = tqdm(list(zip(inputs, images, outputs)), desc="predict", unit="scan", disable=not progress)
        return [_predict_prepared(model, config, kind, path, image, out, **options) for (kind, path), image, out in bar]


def format_report(report: dict[str, Any]) -> str:
    """One scan's report as the lines a reader (a clinician, say) sees: the review flag first, volume, warnings.

    Introduced in notebook 07.
    """
    head = f"{report['input']}: left atrium {report['volume_ml']:.1f} mL ({report['n_voxels']} voxels)"
    if "classes" in report:  # a multi-class run: one volume per class
        parts = [f"{name} {c['volume_ml']:.1f} mL" for name, c in report["classes"].items()]
        head = f"{report['input']}: {', '.join(parts)} ({report['n_voxels']} voxels)"
    lines = [review_line(report), f"{head} -> {report['mask']}"]
    lines += [f"  WARNING: {w}" for w in report["warnings"]] or ["  no warnings"]
    return "\n".join(lines)


def review_line(report: dict[str, Any]) -> str:
    """The report's first line: NEEDS REVIEW with the reasons, passed QC with the score, or QC not fitted."""
    if report.get("needs_review") is None:
        return "QC not fitted: " + "; ".join(report.get("review_reasons", ["no quality control in this report"]))
    score = report.get("quality_score")
    scored = f"quality score {score:.2f}" if score is not None else "no quality model"
    if report["needs_review"]:
        return f"NEEDS REVIEW ({scored}): " + "; ".join(report["review_reasons"])
    if score is None:
        return "QC passed (no quality model: plausibility rules only, none severely violated)"
    return f"QC passed (quality score {score:.2f}, the predicted Dice; no severe plausibility violation)"


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m heartseg_utils.predict``: parse the flags, predict, print each report. Introduced in notebook 07."""
    parser = argparse.ArgumentParser(prog="python -m heartseg_utils.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a finished training run (notebook 03)")
    parser.add_argument(
        "--input", required=True, help="a NIfTI file, a folder of NIfTI files, or a DICOM series folder"
    )
    parser.add_argument("--output", required=True, help="a .nii.gz file for one input, else a folder")
    for flag, what in (
        ("tta", "average over in-plane flips (1 + 2 passes)"),
        ("keep_largest", "keep only the largest connected component"),
    ):
        parser.add_argument(
            f"--{flag}",
            nargs="?",
            const="true",
            default="auto",
            choices=("auto", "true", "false"),
            help=f"{what}: auto (default) = the run's decision from its validation cases (postprocessing.json); "
            f"a bare --{flag} = true",
        )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--channel", type=int, default=None, help="the channel to segment in 4D scans (from 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing masks and reports (never an input)")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    reports = predict(
        args.run_dir,
        args.input,
        args.output,
        tta=None if args.tta == "auto" else args.tta == "true",
        keep_largest=None if args.keep_largest == "auto" else args.keep_largest == "true",
        device=args.device,
        progress=not args.no_progress,
        channel=args.channel,
        overwrite=args.overwrite,
    )
    for report in reports:
        print(format_report(report))
    return reports


if __name__ == "__main__":
    sys.exit(cli.run(main, "python -m heartseg_utils.predict"))
