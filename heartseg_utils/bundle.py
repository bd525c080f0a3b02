"""Export a finished run as a MONAI bundle: network, weights and the whole prediction pipeline as MONAI configs.

Introduced in notebook 07. ``python -m heartseg_utils.export --run_dir R --format bundle`` writes ``R/export/bundle/``
(a folder of its own beside the ONNX export's files): ``configs/inference.json``, ``configs/metadata.json``,
``models/model.pt`` (the state_dict of ``best_model.pt``) and ``docs/README.md``. MONAI runs it without this package:
``python -m monai.bundle run --config_file configs/inference.json --bundle_root . --dataset_dir D --output_dir O``.
Unlike the ONNX file, it holds ``transforms.get_transforms("infer")``'s preprocessing, the sliding window, the
foreground probability mapped back to the scan's grid, the 0.5 threshold and the run's post-processing decision. It
follows the run's flip-TTA decision (``postprocessing.json``), and leaves out mixed precision (it runs in float32),
DICOM and 4D inputs, scan checks and reports.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from heartseg_utils import runs, scans
from heartseg_utils.config import transforms_from_config
from heartseg_utils.data import load_dataset_json
from heartseg_utils.inference import TTA_AXES, load_run, run_keep_largest, run_tta
from heartseg_utils.models import logits_to_probability, model_kwargs, required_divisor

BUNDLE_DIR = "bundle"  # inside run_dir/export/
WRITTEN_BY = "heartseg_utils.bundle"
INFERENCE, METADATA = "configs/inference.json", "configs/metadata.json"
WEIGHTS, README = "models/model.pt", "docs/README.md"
FILES = (INFERENCE, METADATA, WEIGHTS, README)
# the package's model names a bundle can rebuild: each is one MONAI class with the registry's kwargs
NETWORKS = {name: f"monai.networks.nets.{cls}" for name, cls in [("unet", "UNet"), ("dynunet", "DynUNet")]}
NETWORKS["segresnet"] = "monai.networks.nets.SegResNet"
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


def _c(target: str, **kwargs: Any) -> dict[str, Any]:
    """One component of a bundle config: ``{"_target_": target, **kwargs}``."""
    return {"_target_": target, **kwargs}


def _t(name: str, keys: str = "image", **kwargs: Any) -> dict[str, Any]:
    """One ``monai.transforms`` component, on ``keys``."""
    return _c(f"monai.transforms.{name}", keys=keys, **kwargs)


def network_def(config: dict[str, Any]) -> dict[str, Any]:
    """The bundle's ``network_def``: the MONAI class of the run's ``model_name`` with its complete kwargs.

    Introduced in notebook 07.

    Args:
        config: the run's ``config.json``.

    Returns:
        A JSON-ready dict with ``_target_`` (e.g. ``monai.networks.nets.UNet``), ``spatial_dims`` 3, the channels and
        every keyword of ``models.model_kwargs``.

    Raises:
        ValueError: a model name with no MONAI class of its own (``unet3d_scratch``, the slice-wise ``unet2d``).
    """
    name = config["model_name"]
    if name not in NETWORKS:
        raise ValueError(
            f"model_name {name!r} cannot be exported as a MONAI bundle: a bundle rebuilds its network from one MONAI "
            f"class, and this package's {name!r} network is its own code. Bundles support {', '.join(NETWORKS)}; "
            "export this run with --format onnx instead, or train one of those"
        )
    kwargs = model_kwargs(name, config.get("model_kwargs"))
    if name == "dynunet":
        kwargs.setdefault("upsample_kernel_size", kwargs["strides"][1:])  # as models' DynUNet builder does
    channels = {"spatial_dims": 3, "in_channels": 1, "out_channels": int(config["out_channels"])}
    return {"_target_": NETWORKS[name], **channels, **json.loads(json.dumps(kwargs))}


def preprocessing(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``"infer"`` pipeline of ``transforms.get_transforms`` as bundle components, with the run's values.

    Introduced in notebook 07. :func:`check_bundle` checks that it gives the package's tensor on a phantom scan.
    """
    divisor = [int(d) for d in required_divisor(config["model_name"], config.get("model_kwargs"))]
    crop = {"source_key": "image", "allow_smaller": True, "start_coord_key": None, "end_coord_key": None}
    return [
        _t("LoadImaged", image_only=True),
        _t("EnsureChannelFirstd"),
        _t("Orientationd", axcodes="RAS", labels=None),
        _t(
            "Spacingd",
            pixdim=[float(p) for p in config["pixdim"]],
            mode="bilinear",
            scale_extent=True,
            align_corners=True,
        ),
        _t("CropForegroundd", select_fn="$monai.transforms.utils.is_positive", **crop),  # image > 0: is_positive
        _t("NormalizeIntensityd", nonzero=True, channel_wise=True),
        _t("DivisiblePadd", k=divisor),
    ]


def postprocessing(config: dict[str, Any], keep_largest: bool | list[int]) -> list[dict[str, Any]]:
    """``inference.predict_case``'s steps after the network as bundle components. Introduced in notebook 07.

    The network's probabilities (:func:`probability_expression`: softmax, or the sigmoid of one channel, averaged
    over the flips of TTA where the run uses it) give the foreground probability (channel 1 of two), mapped back
    onto the scan's grid with ``Invertd`` (bilinear), thresholded at 0.5, reduced to its largest component if the
    run decided so, saved. A multi-class run (:func:`class_postprocessing`) maps every class probability back and
    takes the argmax.
    """
    if config.get("label_mode") == "multiclass":
        return class_postprocessing(config, keep_largest)
    two = int(config["out_channels"]) > 1
    steps = [_t("Lambdad", "pred", func="$lambda p: p[1:2]")] if two else []  # the foreground channel
    invert = {"transform": "@preprocessing", "orig_keys": "image", "nearest_interp": False, "to_tensor": True}
    steps += [_t("Invertd", "pred", **invert), _t("AsDiscreted", "pred", threshold=0.5)]
    if keep_largest:
        steps.append(_t("KeepLargestConnectedComponentd", "pred", applied_labels=[1], is_onehot=False, connectivity=3))
    save = {"output_dir": "@output_dir", "output_postfix": "@output_postfix", "output_ext": ".nii.gz"}
    save.update(output_dtype="$numpy.uint8", separate_folder=False, resample=False)
    return [*steps, _t("SaveImaged", "pred", **save)]


def class_postprocessing(config: dict[str, Any], keep_largest: bool | list[int]) -> list[dict[str, Any]]:
    """A multi-class run's steps after the probabilities: ``Invertd`` of every class channel, argmax, the largest
    component of the classes the run decided (``keep_largest_values``), class k -> the dataset's ``label_values[k]``,
    saved as uint8 (int16 above 255). Introduced in notebook 07."""
    values = [int(v) for v in config["label_values"]]
    kept = [k for k, v in enumerate(values) if k and (keep_largest is True or v in (keep_largest or ()))]
    invert = {"transform": "@preprocessing", "orig_keys": "image", "nearest_interp": False, "to_tensor": True}
    steps = [_t("Invertd", "pred", **invert)]
    steps.append(_t("AsDiscreted", "pred", argmax=True))
    if kept:
        steps.append(_t("KeepLargestConnectedComponentd", "pred", applied_labels=kept, is_onehot=False, connectivity=3))
    steps.append(_t("Lambdad", "pred", func=f"$lambda p: torch.as_tensor({values}, device=p.device)[p.long()]"))
    save = {"output_dir": "@output_dir", "output_postfix": "@output_postfix", "output_ext": ".nii.gz"}
    dtype = "$numpy.uint8" if max(values) <= 255 else "$numpy.int16"
    save.update(output_dtype=dtype, separate_folder=False, resample=False)
    return [*steps, _t("SaveImaged", "pred", **save)]


def probability_expression(config: dict[str, Any], tta: bool) -> str:
    """The bundle's ``probability``: a batch's class probabilities, as ``inference.predict_case`` computes them.

    Softmax over the channels (the sigmoid of a single channel), of the identity and, with ``tta``, of the image
    flipped along each of ``inference.TTA_AXES`` (flipped back), averaged. The result keeps the image's metadata.
    """
    activation = "torch.softmax(o, 1)" if int(config["out_channels"]) > 1 else "torch.sigmoid(o)"
    flips = [[]] + ([[int(a) + 2] for a in TTA_AXES] if tta else [])  # dims of (N, C, x, y, z)
    each = f"[torch.flip((lambda o: {activation})(@inferer(torch.flip(x, d), @network)), d) for d in {flips}]"
    return f"$lambda x: monai.data.MetaTensor(torch.stack({each}).mean(0).as_tensor(), meta=x.meta)"


def inference_config(config: dict[str, Any], keep_largest: bool | list[int], tta: bool = False) -> dict[str, Any]:
    """``configs/inference.json``: the model zoo's layout (``dataset_dir``, ``datalist``, ``evaluator``, ``run``).

    Introduced in notebook 07. ``dataset_dir`` is an MSD folder (its ``imagesTs/``) or a folder of NIfTI files;
    ``datalist``, ``output_dir``, ``device`` and ``num_workers`` can be overridden on the command line. The
    ``evaluator`` is a plain loop (MONAI's ``SupervisedEvaluator`` needs pytorch-ignite, not a dependency here).
    ``tta``: average over the identity and the flips of ``inference.TTA_AXES`` (the run's ``postprocessing.json``).
    """
    folders = "(os.path.join(@dataset_dir, 'imagesTs'), @dataset_dir)"  # an MSD folder's test images, or any folder
    nifti = (
        f"[f for d in {folders} for f in sorted(glob.glob(os.path.join(d, '*'))) if f.endswith(('.nii', '.nii.gz'))]"
    )
    predict = "monai.data.decollate_batch({**b, 'pred': @probability(b['image'].to(@device)).cpu()})"
    loop = "sum(1 for b in @dataloader for item in @predict(b) if @postprocessing(item) is not None)"
    window = {"roi_size": [int(r) for r in config["roi_size"]], "sw_batch_size": int(config["sw_batch_size"])}
    window.update(overlap=float(config["sw_overlap"]), mode="constant")
    return {
        "imports": ["$import glob", "$import os", "$import types"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        "dataset_dir": "/workspace/data/Task02_Heart",
        "datalist": f"${nifti}",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "num_workers": 0,
        "network_def": network_def(config),
        "network": "$@network_def.to(@device)",
        "preprocessing": _c("monai.transforms.Compose", transforms=preprocessing(config)),
        "dataset": _c("monai.data.Dataset", data="$[{'image': i} for i in @datalist]", transform="@preprocessing"),
        "dataloader": _c(
            "monai.data.DataLoader", dataset="@dataset", batch_size=1, shuffle=False, num_workers="@num_workers"
        ),
        "inferer": _c("monai.inferers.SlidingWindowInferer", **window),
        "probability": probability_expression(config, tta),
        "postprocessing": _c("monai.transforms.Compose", transforms=postprocessing(config, keep_largest)),
        "predict": f"$lambda b: {predict}",
        "evaluator": f"$types.SimpleNamespace(run=torch.no_grad()(lambda: {loop}))",
        "checked_datalist": "$@datalist or exec('raise FileNotFoundError(m)', {'m': 'no .nii/.nii.gz image in '"
        " + str(@dataset_dir) + ' nor in its imagesTs/: pass --dataset_dir DIR or --datalist \"[...]\"'})",
        "load_weights": "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', map_location=@device,"
        " weights_only=True))",
        "initialize": ["$@checked_datalist", "$@load_weights", "$@network.eval()"],
        "run": ["$@evaluator.run()"],
    }


def _dataset_card(config: dict[str, Any]) -> dict[str, str]:
    """The foreground's name, the modality and the data's description from the run's dataset.json (if still there)."""
    try:
        meta = load_dataset_json(config.get("dataset_dir") or config.get("data_dir", ""))
    except (OSError, ValueError):
        meta = {}
    labels, modality = meta.get("labels") or {}, meta.get("modality") or {}
    if config.get("label_mode") == "multiclass":
        labels = {"1": ", ".join(str(n) for n in config["label_names"][1:])}
    return {
        "label": str(labels.get("1", "foreground")),
        "modality": str(modality.get("0", "MRI")),
        "source": str(meta.get("description") or meta.get("name") or "the dataset recorded in the run's config.json"),
    }


def _data_format(config: dict[str, Any], label: str) -> dict[str, Any]:
    """``network_data_format``: the network's input patch and output logits (channel names from the labels)."""
    roi, out_channels = [int(r) for r in config["roi_size"]], int(config["out_channels"])
    names = {"0": "background", "1": label} if out_channels > 1 else {"0": label}
    if config.get("label_mode") == "multiclass":  # channel k: class k, the dataset's label value label_values[k]
        names = {str(k): str(name) for k, name in enumerate(config["label_names"])}
    common = {"type": "image", "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True}
    image = {**common, "format": "magnitude", "modality": "MR", "num_channels": 1, "channel_def": {"0": "image"}}
    pred = {**common, "format": "segmentation", "num_channels": out_channels, "channel_def": names}
    return {"inputs": {"image": image}, "outputs": {"pred": pred}}


def _pred_classes(config: dict[str, Any], label: str) -> str:
    """metadata.json's ``pred_classes``: the values of the saved mask (a multi-class run's label values)."""
    if config.get("label_mode") != "multiclass":
        return f"one channel mask on the input's grid: 1 = {label}, 0 = background"
    named = ", ".join(f"{v} = {n}" for v, n in zip(config["label_values"][1:], config["label_names"][1:]))
    return f"one channel label map on the input's grid: {named}, 0 = background"


def metadata(run_dir: str | os.PathLike[str], config: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json``: MONAI's bundle metadata fields, the run's metrics and training config.

    Introduced in notebook 07.

    Args:
        run_dir: the run (its ``metrics.json``, ``config.json`` and ``postprocessing.json`` go in).
        config: its ``config.json`` (from ``inference.load_run``).
        check: the result of :func:`check_bundle`.

    Returns:
        A JSON-ready dict: MONAI's fields (``version``, ``network_data_format``, ``eval_metrics``, ...) and
        ``heartseg`` (``written_by``, ``metrics``, ``training_config``, ``postprocessing``, ``check``).
    """
    import monai
    import nibabel
    import numpy

    run = Path(run_dir).expanduser()
    card, metrics = _dataset_card(config), runs.read_json(run / runs.METRICS) if (run / runs.METRICS).is_file() else {}
    post = runs.read_json(run / runs.POSTPROCESSING) if (run / runs.POSTPROCESSING).is_file() else {}
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by {WRITTEN_BY} from the run {run.name!r}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": nibabel.__version__},
        "task": f"3D segmentation of the {card['label']} in {card['modality']} scans",
        "description": f"A MONAI {config['model_name']} trained with heartseg. Data: {card['source']}",
        "authors": "heartseg (a training run exported by heartseg_utils.bundle)",
        "copyright": "the authors of the training run; the training data's licence applies (MSD: CC-BY-SA 4.0)",
        "data_type": "nibabel",
        "image_classes": f"one channel {card['modality']}, z-scored over its non-zero voxels after resampling",
        "pred_classes": _pred_classes(config, card["label"]),
        "eval_metrics": {
            "val_mean_dice": metrics.get("best_val_dice"),
            "val_min_dice": metrics.get("best_val_dice_min"),
        },
        "intended_use": f"Teaching and research on {card['label']} segmentation; not for diagnostic use",
        "limitations": _limits(bool(post.get("tta"))),
        "network_data_format": _data_format(config, card["label"]),
        "heartseg": {"written_by": WRITTEN_BY, "run_dir": str(run), "metrics": metrics, "check": check}
        | {"training_config": runs.read_json(run / runs.CONFIG), "postprocessing": post},
    }


def _limits(tta: bool) -> str:
    """metadata.json's ``limitations``: what the bundle leaves out, and its TTA as the run decided."""
    tta_line = "uses the run's flip TTA" if tta else "uses no test-time augmentation (the run decided against it)"
    return (
        "Validated only on the run's own validation cases (eval_metrics); a run on synthetic phantoms says nothing "
        "about real scans. Unlike `python -m heartseg_utils.predict` the bundle runs in float32 (predict follows the "
        f"precision the run trained in), {tta_line}, reads 3D NIfTI only (no DICOM series, no 4D scans), does not "
        "check scans for NaN voxels or broken headers, and writes no volume report or quality control."
    )


def check_bundle(
    bundle_dir: str | os.PathLike[str], model: torch.nn.Module, config: dict[str, Any], *, atol: float = 1e-3
) -> dict[str, Any]:
    """Parse a written bundle with MONAI's ``ConfigParser`` and compare it with the package. Notebook 07.

    The network of ``network_def`` takes ``models/model.pt`` strictly and gives the run's foreground probability on a
    random patch; the bundle's preprocessing gives the tensor of ``transforms.get_transforms("infer")`` on a phantom.

    Args:
        bundle_dir: the bundle root (``configs/``, ``models/``).
        model: the run's network (``inference.load_run``), on the CPU in eval mode.
        config: the run's ``config.json``.
        atol: the largest accepted difference, of the probability and of the preprocessed voxels.

    Returns:
        ``{"network_max_abs_diff", "preprocessing_max_abs_diff", "phantom_shape", "atol"}``.

    Raises:
        AssertionError: a difference above ``atol``, or another preprocessed shape.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(root / INFERENCE))
    parser["bundle_root"] = str(root)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(root / WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    x = torch.randn((1, 1, *[int(r) for r in config["roi_size"]]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net_diff = float((logits_to_probability(net.eval()(x)) - logits_to_probability(model(x))).abs().max())
    ours, theirs = _preprocess_phantom(config, parser)
    if ours.shape != theirs.shape:
        raise AssertionError(f"{root / INFERENCE}: its preprocessing gives {theirs.shape}, the package's {ours.shape}")
    pre_diff = float((ours - theirs).abs().max())
    if not (net_diff <= atol and pre_diff <= atol):
        raise AssertionError(
            f"{root}: the bundle differs from the run (foreground probability by {net_diff:.2e}, preprocessed voxels by"
            f" {pre_diff:.2e}; accepted {atol})"
        )
    diffs = {"network_max_abs_diff": net_diff, "preprocessing_max_abs_diff": pre_diff}
    return {**diffs, "phantom_shape": list(ours.shape[1:]), "atol": atol}


def _preprocess_phantom(config: dict[str, Any], parser: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The package's and the bundle's preprocessed image of one small phantom (``synthetic.generate_case``)."""
    import nibabel as nib

    from heartseg_utils.synthetic import generate_case
    from heartseg_utils.transforms import quiet_readers

    case = generate_case(0, shape=(48, 48, 32))
    with tempfile.TemporaryDirectory(prefix="heartseg_bundle_") as tmp, quiet_readers():
        path = str(Path(tmp) / "phantom.nii.gz")
        nib.save(nib.Nifti1Image(case.image, case.affine), path)
        pipelines = (transforms_from_config(config, "infer"), parser.get_parsed_content("preprocessing"))
        ours, theirs = (torch.as_tensor(p({"image": path})["image"]).float() for p in pipelines)
    return ours, theirs


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a bundle this module wrote: its ``configs/metadata.json`` says so. Notebook 07."""
    try:
        meta = json.loads((Path(path) / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("heartseg") or {}).get("written_by") == WRITTEN_BY


def check_bundle_dir(out: Path, *, overwrite: bool = False) -> None:
    """Refuse a bundle folder that may not be written: allowed are a new or empty folder and an earlier bundle.

    Introduced in notebook 07. Any other folder only with ``overwrite`` (the bundle's four files are written into it,
    its other files are kept).

    Raises:
        ValueError: ``out`` is a file or a symbolic link loop.
        FileExistsError: ``out`` holds files this module did not write, without ``overwrite``.
    """
    if scans.is_link_loop(out):
        raise ValueError(f"--out_dir {out} is a symbolic link loop (it points back at itself): fix or remove the link")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out_dir {out} is a file, not a folder: choose another --out_dir")
    if out.is_dir() and any(out.iterdir()) and not is_bundle(out) and not overwrite:
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise FileExistsError(
            f"--out_dir {out} already holds files the bundle export did not write ({shown}, ...; no {METADATA} of "
            f"its own): choose an empty or new folder, or pass --overwrite (overwrite=True) to write its "
            f"{len(FILES)} files into it"
        )


def _readme(meta: dict[str, Any], inference: dict[str, Any]) -> str:
    """The bundle's ``docs/README.md``: what the model is, how to run it, its inputs, outputs, metrics and limits."""
    info, fmt = meta["heartseg"], meta["network_data_format"]
    metrics, pred, label = info["metrics"], fmt["outputs"]["pred"], meta["pred_classes"]
    window = {k: v for k, v in inference["inferer"].items() if k != "_target_"}
    return f"""# {meta["task"]}

{meta["description"]}.

The network is `{inference["network_def"]["_target_"]}`; `{WRITTEN_BY}` exported it from the run `{info["run_dir"]}`
(best epoch {metrics.get("best_epoch")} of {metrics.get("epochs_run")}).

## Run it

    python -m monai.bundle run --config_file configs/inference.json --bundle_root . --dataset_dir DIR --output_dir OUT

`DIR` is an MSD folder (its `imagesTs/`) or a folder of `.nii`/`.nii.gz` scans; `--datalist "['a.nii.gz']"` names
scans instead; `--device '$torch.device("cpu")'` forces the CPU. Each result is
`OUT/<case>_{inference["output_postfix"]}.nii.gz`, a uint8 {label}. It needs MONAI, PyTorch and nibabel (the command
line also `fire`), not heartseg. In Python, `monai.bundle.ConfigParser` reads `configs/inference.json` and builds
`network_def`; `models/model.pt` is its state_dict.

## Inputs and outputs

One 3D scan, prepared in this order (`preprocessing`):

{_listing(inference["preprocessing"]["transforms"])}

The network sees {fmt["inputs"]["image"]["spatial_shape"]}-voxel patches through MONAI's sliding window
{json.dumps(window)} and returns {pred["num_channels"]} logit channels {json.dumps(pred["channel_def"])}; then
(`postprocessing`):

{_listing(inference["postprocessing"]["transforms"])}

## Metrics

Validation Dice of the best epoch: mean {metrics.get("best_val_dice")}, worst case {metrics.get("best_val_dice_min")}.
`configs/metadata.json` holds the run's `metrics.json` (`heartseg.metrics`) and `config.json`
(`heartseg.training_config`). This export against the run: {json.dumps(info["check"])}.

## Intended use

{meta["intended_use"]}.

## Limitations

{meta["limitations"]}
"""


def _listing(components: list[dict[str, Any]]) -> str:
    """Components as a numbered Markdown list: ``1. `Name` {its arguments}``."""
    args = [{k: v for k, v in c.items() if k != "_target_"} for c in components]
    return "\n".join(f"1. `{c['_target_'].rsplit('.', 1)[1]}` {json.dumps(a)}" for c, a in zip(components, args))


def export_bundle(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    atol: float = 1e-3,
) -> dict[str, Any]:
    """Export a run as a MONAI bundle in ``run_dir/export/bundle/`` and check it. Introduced in notebook 07.

    The files are written to a hidden folder beside ``out_dir`` and moved in only once :func:`check_bundle` has
    passed, so a failed export leaves ``out_dir`` as it was.

    Args:
        run_dir: a finished training run of a model with a MONAI class (:data:`NETWORKS`).
        out_dir: the bundle root; default ``run_dir/export/bundle``. It must be new, empty or an earlier bundle
            (:func:`check_bundle_dir`).
        overwrite: write into a non-empty ``out_dir`` that this module did not create (its other files are kept).
        atol: passed to :func:`check_bundle`.

    Returns:
        The content of ``configs/metadata.json``.

    Raises:
        ValueError: an unsupported ``model_name`` (:func:`network_def`), a damaged run, a refused ``out_dir``.
    """
    run = Path(run_dir).expanduser()
    scans.refuse_broken_link(run, "run_dir")  # before out_dir, inside it by default
    out = Path(out_dir).expanduser() if out_dir is not None else run / "export" / BUNDLE_DIR
    check_bundle_dir(out, overwrite=overwrite)
    network_def(runs.read_run_config(run))  # an unsupported network is refused before its weights are read
    model, config = load_run(run, "cpu")
    inference = inference_config(config, run_keep_largest(run), run_tta(run))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name in FILES:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / INFERENCE).write_text(json.dumps(inference, indent=4))
        torch.save(model.state_dict(), staging / WEIGHTS)
        meta = metadata(run, config, check_bundle(staging, model, config, atol=atol))
        (staging / METADATA).write_text(json.dumps(meta, indent=4))
        (staging / README).write_text(_readme(meta, inference))
        for name in FILES:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta
