"""Predict new scans with a finished run: NIfTI files, a DICOM series or a folder of NIfTI files.

Introduced in notebook 07. From the command line::

    python -m heartseg_utils.predict --run_dir runs/03_train --input scan.nii.gz --output scan_mask.nii.gz
    python -m heartseg_utils.predict --run_dir runs/03_train --input dicom_folder/ --output mask.nii.gz --tta
    python -m heartseg_utils.predict --run_dir runs/03_train --input imagesTs/ --output predictions/

Each mask is written as NIfTI (uint8, 1 = left atrium) on the input's own voxel grid and affine: a NIfTI input's
shape and affine, or for a DICOM series the grid of its slices sorted along their normal (:mod:`heartseg_utils.dicom`).
Beside each mask a JSON report holds the foreground volume in mL and the warnings of ``metrics.sanity_check``.
The model, its preprocessing and the sliding window all come from ``run_dir`` (``inference.load_run`` and
``inference.predict_case``): a DICOM series is first converted to a temporary NIfTI with the series' geometry.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from heartseg_utils.data import case_name

NIFTI_SUFFIXES = (".nii", ".nii.gz")


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
        ValueError: an empty folder, a file that is not NIfTI, or a folder that mixes NIfTI and other files.
    """
    from heartseg_utils.dicom import series_files

    path = Path(input_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
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
    """
    out = Path(output).expanduser()
    if is_nifti(out):
        if len(inputs) > 1:
            raise ValueError(f"--input holds {len(inputs)} images but --output {out} is one file: give a folder")
        return [out]
    return [out / f"{case_name(path)}.nii.gz" for _, path in inputs]


def report_path(mask_path: str | os.PathLike[str]) -> Path:
    """The JSON report beside a mask: ``<case>.json`` for ``<case>.nii.gz``. Introduced in notebook 07."""
    return Path(mask_path).with_name(f"{case_name(mask_path)}.json")


def predict_one(
    model: Any,
    config: dict[str, Any],
    kind: str,
    input_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    tta: bool = False,
    keep_largest: bool = False,
) -> dict[str, Any]:
    """Predict one NIfTI file or DICOM series, write the mask and its JSON report. Introduced in notebook 07.

    Args:
        model, config: from ``inference.load_run``.
        kind: ``"nifti"`` or ``"dicom"`` (as :func:`find_inputs` says).
        input_path: the NIfTI file or the DICOM series' folder.
        out_path: the mask to write (.nii.gz); the report goes to :func:`report_path`.
        tta, keep_largest: as in ``inference.predict_case``.

    Returns:
        The report: ``input``, ``kind``, ``mask``, ``volume_ml``, ``n_voxels``, ``shape``, ``spacing_mm``,
        ``warnings``, ``tta``, ``keep_largest``, ``precision`` (``bfloat16`` or ``float32``), ``seconds``.
    """
    from heartseg_utils import inference, metrics
    from heartseg_utils.dicom import series_to_nifti
    from heartseg_utils.transforms import quiet_readers

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="heartseg_dicom_") as tmp, quiet_readers():
        image = series_to_nifti(input_path, Path(tmp) / "series.nii.gz") if kind == "dicom" else Path(input_path)
        result = inference.predict_case(model, config, image, tta=tta, keep_largest=keep_largest)
        mask_path = inference.save_prediction(result["mask"], image, out_path)
    report = {
        "input": str(input_path),
        "kind": kind,
        "mask": str(mask_path),
        "volume_ml": round(metrics.volume_ml(result["mask"], result["spacing"]), 3),
        "n_voxels": int(np.count_nonzero(result["mask"])),
        "shape": list(result["mask"].shape),
        "spacing_mm": [round(s, 4) for s in result["spacing"]],
        "warnings": metrics.sanity_check(result["mask"]),
        "tta": tta,
        "keep_largest": keep_largest,
        "precision": result["precision"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    report_path(mask_path).write_text(json.dumps(report, indent=1))
    return report


def predict(
    run_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    tta: bool = False,
    keep_largest: bool | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[dict]:
    """Predict every image of ``input_path`` (see :func:`find_inputs`) with a run; what the command line runs.

    Introduced in notebook 07.

    Args:
        run_dir: a finished training run (``config.json`` and ``best_model.pt``).
        input_path: a NIfTI file, a folder of NIfTI files, or a folder holding one DICOM series.
        output: a .nii/.nii.gz file for one input, else a folder (masks named after the inputs).
        tta, keep_largest: as in ``inference.predict_case``; ``keep_largest=None`` follows the run's own
            post-processing decision (``postprocessing.json``, see ``inference.run_keep_largest``).
        device: "auto", "cpu" or "cuda".
        progress: show a tqdm bar over the inputs.

    Returns:
        One report per input (:func:`predict_one`), each also written as JSON beside its mask.
    """
    from tqdm.auto import tqdm

    from heartseg_utils.inference import load_run, run_keep_largest

    keep_largest = run_keep_largest(run_dir) if keep_largest is None else keep_largest
    inputs = find_inputs(input_path)
    outputs = output_paths(inputs, output)
    model, config = load_run(run_dir, device)
    reports = []
    for (kind, path), out in tqdm(list(zip(inputs, outputs)), desc="predict", unit="scan", disable=not progress):
        report = predict_one(model, config, kind, path, out, tta=tta, keep_largest=keep_largest)
        reports.append({**report, "run_dir": str(run_dir)})
        report_path(out).write_text(json.dumps(reports[-1], indent=1))
    return reports


def format_report(report: dict[str, Any]) -> str:
    """One scan's report as the lines a reader (a clinician, say) sees: volume, warnings. Notebook 07."""
    head = f"{report['input']}: left atrium {report['volume_ml']:.1f} mL ({report['n_voxels']} voxels)"
    lines = [f"{head} -> {report['mask']}"]
    lines += [f"  WARNING: {w}" for w in report["warnings"]] or ["  no warnings"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m heartseg_utils.predict``: parse the flags, predict, print each report. Introduced in notebook 07."""
    parser = argparse.ArgumentParser(prog="python -m heartseg_utils.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a finished training run (notebook 03)")
    parser.add_argument(
        "--input", required=True, help="a NIfTI file, a folder of NIfTI files, or a DICOM series folder"
    )
    parser.add_argument("--output", required=True, help="a .nii.gz file for one input, else a folder")
    parser.add_argument("--tta", action="store_true", help="average over flips (1 + 3 passes)")
    parser.add_argument(
        "--keep_largest",
        nargs="?",
        const="true",
        default="auto",
        choices=("auto", "true", "false"),
        help="keep only the largest connected component: auto (default) = the run's decision from its validation "
        "cases (postprocessing.json); a bare --keep_largest = true",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    reports = predict(
        args.run_dir,
        args.input,
        args.output,
        tta=args.tta,
        keep_largest=None if args.keep_largest == "auto" else args.keep_largest == "true",
        device=args.device,
        progress=not args.no_progress,
    )
    for report in reports:
        print(format_report(report))
    return reports


if __name__ == "__main__":
    main()
