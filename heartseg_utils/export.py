"""Export a finished run's network to ONNX (and a ``torch.export`` program), checked with ONNX Runtime; or as a bundle.

Introduced in notebook 07. From the command line::

    python -m heartseg_utils.export --run_dir runs/03_train                  # --format onnx, the default
    python -m heartseg_utils.export --run_dir runs/03_train --format bundle  # a MONAI bundle, heartseg_utils.bundle

writes ``run_dir/export/``: ``model.onnx`` (input ``image`` (batch, 1, *roi_size) float32, output ``logits``
(batch, C, *roi_size); the batch size is free), ``model.pt2`` (the same network as a ``torch.export`` program,
when the exporter manages it), ``export.json`` (what the files expect and the check's result) and ``README.md``.

The export holds the network only. What it does NOT contain, and a user must redo exactly as the run did
(``config.json``): orientation to RAS, resampling to ``pixdim``, the crop to the body (image > 0), the z-score
over non-zero voxels, padding to a multiple of 16, the sliding window over ``roi_size`` patches, the softmax
(or sigmoid) to a foreground probability, the 0.5 threshold and the way back to the scan's own grid.
:func:`onnx_predictor` plugs the ONNX file into MONAI's sliding window for that. A MONAI bundle
(``--format bundle``, :mod:`heartseg_utils.bundle`) holds all of it; it is written to ``run_dir/export/bundle/``, a
folder of its own that the ONNX export leaves alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heartseg_utils import cli, scans
from heartseg_utils.bundle import BUNDLE_DIR, FILES, export_bundle, is_bundle
from heartseg_utils.inference import load_run
from heartseg_utils.models import logits_to_probability, required_divisor

OPSET = 18
WRITTEN_BY = "heartseg_utils.export"


def foreground_probability(logits: Any) -> np.ndarray:
    """(N, C, ...) logits -> (N, 1, ...) foreground probability: softmax channel 1, or the sigmoid for C = 1.

    Introduced in notebook 07; the same rule as ``inference.predict_case``.
    """
    return logits_to_probability(torch.as_tensor(np.asarray(logits, dtype=np.float32))).numpy()


def _example(roi_size: Any, seed: int = 0, batch: int = 2) -> torch.Tensor:
    """A z-scored-like random patch batch (N(0, 1)), the input statistics the network was trained on."""
    return torch.randn((batch, 1, *[int(r) for r in roi_size]), generator=torch.Generator().manual_seed(seed))


def export_onnx(model: torch.nn.Module, roi_size: Any, path: str | os.PathLike[str], *, opset: int = OPSET) -> Path:
    """Write ``model`` as ONNX with torch's exporter (``dynamo=True``; needs ``onnxscript``); the batch is dynamic.

    Introduced in notebook 07.

    Args:
        model: the network on the CPU, in eval mode.
        roi_size: the patch size the sliding window feeds (config.json's ``roi_size``); spatial sizes are fixed.
        path: the .onnx file to write.
        opset: the ONNX opset.

    Returns:
        ``path``.
    """
    import logging
    import warnings

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    log = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed" notes
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # torch's own use of a deprecated pytree class
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                model,
                (_example(roi_size),),
                str(path),
                input_names=["image"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                verbose=False,
                external_data=False,
            )
    finally:
        log.setLevel(level)
    return Path(path)


def export_program(model: torch.nn.Module, roi_size: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a ``torch.export`` program (.pt2; load with ``torch.export.load(path).module()``).

    Introduced in notebook 07. The batch size is dynamic, the spatial size is ``roi_size``.
    """
    import warnings

    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():  # torch's own use of a deprecated pytree class warns on save
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(model, (_example(roi_size),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    return Path(path)


def check_onnx(
    model: torch.nn.Module, onnx_path: str | os.PathLike[str], roi_size: Any, *, seed: int = 0, atol: float = 1e-3
) -> float:
    """Compare ONNX Runtime with PyTorch on a random patch: largest foreground-probability difference.

    Introduced in notebook 07.

    Args:
        model: the PyTorch network (CPU, eval mode).
        onnx_path: the file :func:`export_onnx` wrote.
        roi_size: the patch size.
        seed: seed of the random N(0, 1) patch.
        atol: the largest difference accepted.

    Returns:
        The largest absolute difference of the foreground probability over the patch.

    Raises:
        AssertionError: the difference exceeds ``atol``.
    """
    import onnxruntime as ort

    x = _example(roi_size, seed, batch=1)
    with torch.no_grad():
        expected = foreground_probability(model(x).float())
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = foreground_probability(session.run(["logits"], {"image": x.numpy()})[0])
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        raise AssertionError(
            f"{onnx_path}: ONNX Runtime's foreground probability differs from PyTorch's by {diff:.2e}"
            f" (> {atol}) on a {tuple(x.shape[2:])} patch"
        )
    return diff


def onnx_predictor(onnx_path: str | os.PathLike[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap an ONNX file as a function of a torch batch, for ``monai.inferers.sliding_window_inference``.

    Introduced in notebook 07.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:
        logits = session.run(["logits"], {"image": batch.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(logits).to(batch.device)

    return run


def preprocessing_card(config: dict[str, Any]) -> dict[str, Any]:
    """What the exported network expects and does not do itself, with the run's values. Introduced in notebook 07.

    Args:
        config: the run's ``config.json``.

    Returns:
        A JSON-ready dict: the input/output contract, the preprocessing steps in order, the sliding window and
        the post-processing, each with the values of ``config``.
    """
    out_channels = config["out_channels"]
    divisor = list(required_divisor(config["model_name"], config.get("model_kwargs")))
    multiclass = config.get("label_mode") == "multiclass"
    to_probability = "softmax(logits, 1)[:, 1:] (one channel per class)" if multiclass else "softmax(logits, 1)[:, 1]"
    return {
        "input": {"name": "image", "shape": ["batch", 1, *config["roi_size"]], "dtype": "float32"},
        "output": {
            "name": "logits",
            "shape": ["batch", out_channels, *config["roi_size"]],
            "dtype": "float32",
            "to_probability": "sigmoid(logits[:, 0])" if out_channels == 1 else to_probability,
        },
        "not_included": {
            "orientation": "RAS (MONAI Orientationd axcodes='RAS')",
            "spacing_mm": [float(p) for p in config["pixdim"]],
            "resampling": "bilinear for the image (Spacingd scale_extent=True, align_corners=True)",
            "crop": "to the bounding box of image > 0 (CropForegroundd)",
            "intensity": "z-score over the non-zero voxels, per channel (NormalizeIntensityd nonzero=True)",
            "padding": f"each spatial side (x, y, z) to a multiple of {divisor} (DivisiblePadd k={divisor})",
            "sliding_window": {
                "roi_size": list(config["roi_size"]),
                "sw_batch_size": config["sw_batch_size"],
                "overlap": config["sw_overlap"],
                "blend": "constant (the logits are averaged)",
            },
            "threshold": "argmax over the classes (background first), class k = label value label_values[k]"
            if multiclass
            else "foreground probability >= 0.5",
            "back_to_the_scan": "undo padding, crop, spacing and orientation (MONAI Invertd) onto the input's grid",
            "post_processing": "as the run's postprocessing.json decided: with tta, the mean probability over the "
            "identity and one flip along each of tta_axes (flipped back); with keep_largest (a multi-class run: "
            "keep_largest_values), the largest connected component",
        },
        **label_card(config),
        "model_name": config["model_name"],
    }


def label_card(config: dict[str, Any]) -> dict[str, Any]:
    """export.json's ``labels`` (and, for a multi-class run, ``label_mode``, ``n_classes``, ``label_values`` and
    ``label_names``: class k of the output channels is the dataset's label value ``label_values[k]``)."""
    if config.get("label_mode") != "multiclass":
        return {"labels": "binary: every non-zero label value is foreground"}
    return {
        "labels": "multiclass: output channel k is the class of label value label_values[k] (0 = background)",
        "label_mode": "multiclass",
        "n_classes": int(config["out_channels"]),
        "label_values": [int(v) for v in config["label_values"]],
        "label_names": [str(n) for n in config["label_names"]],
    }


def _readme(card: dict[str, Any], files: list[str], check: dict[str, Any]) -> str:
    """The export folder's README.md: files, contract, what is missing and the check."""
    steps = "\n".join(f"- {k}: {json.dumps(v)}" for k, v in card["not_included"].items())
    return (
        f"# Exported {card['model_name']} network\n\nFiles: {', '.join(files)}.\n\n"
        f"Input `image` {card['input']['shape']} float32; output `logits` {card['output']['shape']}; "
        f"foreground probability = {card['output']['to_probability']}.\n\n"
        "The export holds the network only. Redo these steps, with exactly these values, around it "
        "(`heartseg_utils.export.onnx_predictor` plugs the ONNX file into MONAI's sliding window):\n\n"
        f"{steps}\n\nCheck against the PyTorch checkpoint: {json.dumps(check)}\n"
    )


def _owned(out: Path) -> bool:
    """Whether ``out`` is an export folder this module wrote: its ``export.json`` is one of ours."""
    try:
        info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("written_by") == WRITTEN_BY or {"files", "check"} <= set(info))


def check_out_dir(out: Path, *, overwrite: bool = False) -> bool:
    """Refuse an ``out_dir`` that export may not write into; return whether it is an earlier export of its own.

    Introduced in notebook 07. Allowed: a folder that does not exist yet, an empty folder, or one holding an
    ``export.json`` that export wrote (an earlier export, replaced); anything else only with ``overwrite``. A bundle
    of :mod:`heartseg_utils.bundle` in its ``bundle/`` subfolder is not in the way.

    Raises:
        ValueError: ``out`` is a file or a symbolic link loop.
        FileExistsError: ``out`` holds files export did not write, without ``overwrite``.
    """
    if scans.is_link_loop(out):
        raise ValueError(f"--out_dir {out} is a symbolic link loop (it points back at itself): fix or remove the link")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out_dir {out} is a file, not a folder: choose another --out_dir")
    if not out.is_dir() or not any(p for p in out.iterdir() if not (p.name == BUNDLE_DIR and is_bundle(p))):
        return False
    if _owned(out):
        return True
    if not overwrite:
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise FileExistsError(
            f"--out_dir {out} already holds files export did not write ({shown}, ...; no export.json of its own): "
            "choose an empty or new folder, or pass --overwrite (overwrite=True) to write model.onnx, model.pt2, "
            "export.json and README.md into it"
        )
    return False


def _export_files(model: torch.nn.Module, config: dict[str, Any], out: Path, program: bool, atol: float) -> tuple:
    """Write and check the export's network files in ``out``: ``(files, check, notes)``."""
    files, notes = [export_onnx(model, config["roi_size"], out / "model.onnx").name], []
    check = {
        "max_abs_diff": check_onnx(model, out / "model.onnx", config["roi_size"], atol=atol),
        "atol": atol,
        "patch": list(config["roi_size"]),
        "compared": "foreground probability, ONNX Runtime vs PyTorch",
    }
    if program:
        try:
            files.append(export_program(model, config["roi_size"], out / "model.pt2").name)
        except Exception as err:  # noqa: BLE001 - the ONNX file stands on its own; say why the extra one is missing
            notes.append(f"model.pt2 not written: torch.export failed ({type(err).__name__}: {str(err)[:200]})")
    return files, check, notes


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    program: bool = True,
    atol: float = 1e-3,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a run's ``best_model.pt`` to ``run_dir/export/`` and check the ONNX file. Introduced in notebook 07.

    The files are written to a hidden folder beside ``out_dir`` and moved in only once the check has passed, so a
    failed export leaves ``out_dir`` as it was.

    Args:
        run_dir: a finished training run.
        out_dir: where to write; default ``run_dir/export``. It must be new, empty or an earlier export
            (:func:`check_out_dir`).
        program: also write ``model.pt2`` (``torch.export``); skipped with a note if the exporter fails.
        atol: the largest accepted foreground-probability difference between ONNX Runtime and PyTorch.
        overwrite: write into a non-empty ``out_dir`` that export did not create (its other files are kept).

    Returns:
        The content of ``export.json``: ``files``, ``check`` (``max_abs_diff``, ``atol``, ``patch``) and the
        :func:`preprocessing_card`.
    """
    import shutil
    import tempfile

    scans.refuse_broken_link(Path(run_dir).expanduser(), "run_dir")  # before out_dir, inside it by default
    out = Path(out_dir).expanduser() if out_dir is not None else Path(run_dir).expanduser() / "export"
    owned = check_out_dir(out, overwrite=overwrite)
    model, config = load_run(run_dir, "cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        files, check, notes = _export_files(model, config, staging, program, atol)
        card = preprocessing_card(config)
        info = {"run_dir": str(run_dir), "written_by": WRITTEN_BY, "files": files, "check": check, "notes": notes}
        info.update(card)
        (staging / "export.json").write_text(json.dumps(info, indent=1))
        (staging / "README.md").write_text(_readme(card, files, check))
        out.mkdir(exist_ok=True)
        if owned and "model.pt2" not in files:
            (out / "model.pt2").unlink(missing_ok=True)  # an earlier export's program would not match this one
        for name in (*files, "export.json", "README.md"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _print_bundle(meta: dict[str, Any], out: Path) -> None:
    """What ``--format bundle`` wrote, and its check."""
    check = meta["heartseg"]["check"]
    print(
        f"wrote the MONAI bundle {out} ({', '.join(FILES)}); against the run: foreground probability within "
        f"{check['network_max_abs_diff']:.2e}, preprocessing within {check['preprocessing_max_abs_diff']:.2e}. Run it: "
        f"python -m monai.bundle run --config_file {out / 'configs' / 'inference.json'} --bundle_root {out} "
        "--dataset_dir DIR --output_dir OUT"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m heartseg_utils.export --run_dir R [--format onnx|bundle] [--out_dir D] [--no_program]
    [--overwrite]``. Notebook 07."""
    parser = argparse.ArgumentParser(prog="python -m heartseg_utils.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a finished training run (notebook 03)")
    parser.add_argument(
        "--format",
        default="onnx",
        choices=("onnx", "bundle"),
        help="onnx (default): the network as model.onnx + model.pt2; bundle: a MONAI bundle with the whole pipeline",
    )
    parser.add_argument("--out_dir", default=None, help="default: RUN_DIR/export (onnx), RUN_DIR/export/bundle")
    parser.add_argument("--no_program", action="store_true", help="onnx: write the ONNX file only (no model.pt2)")
    parser.add_argument(
        "--atol", type=float, default=1e-3, help="accepted probability difference (ONNX or the bundle vs PyTorch)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out_dir that export did not create"
    )
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.format == "bundle":
        meta = export_bundle(args.run_dir, args.out_dir, overwrite=args.overwrite, atol=args.atol)
        _print_bundle(meta, Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "export" / BUNDLE_DIR)
        return meta
    info = export_run(args.run_dir, args.out_dir, program=not args.no_program, atol=args.atol, overwrite=args.overwrite)
    out = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "export"
    print(
        f"wrote {', '.join(info['files'])}, export.json and README.md to {out}; ONNX Runtime vs PyTorch: "
        f"largest foreground-probability difference {info['check']['max_abs_diff']:.2e} (<= {args.atol})"
    )
    for note in info["notes"]:
        print(note)
    return info


if __name__ == "__main__":
    sys.exit(cli.run(main, "python -m heartseg_utils.export"))
