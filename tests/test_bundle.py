"""bundle: a tiny run exported as a MONAI bundle is read by MONAI's own tools and predicts what predict predicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from heartseg_utils import bundle, cli, inference, runs
from heartseg_utils import export as E
from heartseg_utils.metrics import dice
from heartseg_utils.predict import predict
from heartseg_utils.train import run_training
from tests._tiny_run import TINY

REPO = Path(__file__).resolve().parents[1]
PROG = "python -m heartseg_utils.export"


@pytest.fixture(scope="module")
def bundled(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny run (fp32, so predict and the float32 bundle compute alike) and ``export --format bundle`` of it."""
    run = tmp_path_factory.mktemp("bundle") / "run"
    run_training({**TINY, "data_dir": str(tiny_msd), "run_dir": str(run), "max_epochs": 1, "amp": "off"})
    return run, E.main(["--run_dir", str(run), "--format", "bundle"])


def _parser(root: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / bundle.INFERENCE))
    parser["bundle_root"] = str(root)
    return parser


def test_the_bundle_has_its_files_beside_the_onnx_export(bundled: tuple[Path, dict]) -> None:
    run, meta = bundled
    root = run / "export" / bundle.BUNDLE_DIR
    assert all((root / name).stat().st_size > 0 for name in bundle.FILES)
    assert bundle.is_bundle(root) and json.loads((root / bundle.METADATA).read_text()) == meta
    assert E.check_out_dir(run / "export") is False  # the ONNX export may still write run/export/: not in its way
    readme = (root / bundle.README).read_text()
    assert "python -m monai.bundle run --config_file configs/inference.json" in readme and "Limitations" in readme


def test_config_parser_builds_the_network_and_the_weights_load_strictly(bundled: tuple[Path, dict]) -> None:
    run, _ = bundled
    root = run / "export" / bundle.BUNDLE_DIR
    net = _parser(root).get_parsed_content("network_def")
    assert type(net).__module__.startswith("monai.networks.nets") and type(net).__name__ == "UNet"
    state = torch.load(root / bundle.WEIGHTS, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    model, _ = inference.load_run(run, "cpu")
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), model(x), rtol=0, atol=0)


def test_monai_verifies_the_network_against_the_metadata(bundled: tuple[Path, dict]) -> None:
    from monai.bundle import verify_net_in_out

    root = bundled[0] / "export" / bundle.BUNDLE_DIR
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(root / bundle.METADATA),
        config_file=str(root / bundle.INFERENCE),
        device="cpu",
        bundle_root=str(root),
    )


def _run_bundle(root: Path, dataset_dir: Path, output_dir: Path) -> dict:
    """MONAI's bundle runner, its command line (``python -m monai.bundle run``), in a fresh process.

    Returns what the process saw: the heartseg modules it imported (there should be none).
    """
    args = {"config_file": str(root / bundle.INFERENCE), "bundle_root": str(root)}
    args.update(dataset_dir=str(dataset_dir), output_dir=str(output_dir), meta_file=str(root / bundle.METADATA))
    argv = ["monai.bundle", "run", *(f"--{k}={v}" for k, v in args.items())]  # `python -m monai.bundle run ...`
    code = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_module('monai.bundle', run_name='__main__')"
    code += "; import json, sys; print(json.dumps(sorted(m for m in sys.modules if m.startswith('heartseg'))))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"heartseg_modules": json.loads(done.stdout.strip().splitlines()[-1])}


def test_the_bundle_runner_predicts_what_predict_predicts(
    bundled: tuple[Path, dict], tiny_msd: Path, tmp_path: Path
) -> None:
    run, _ = bundled
    scan = min((tiny_msd / "imagesTs").iterdir())
    seen = _run_bundle(run / "export" / bundle.BUNDLE_DIR, tiny_msd, tmp_path / "bundle_out")
    assert seen["heartseg_modules"] == []  # MONAI alone ran it
    predict(run, scan, tmp_path / "predict_out" / scan.name, progress=False)  # both follow the run's TTA decision
    ours = nib.load(str(tmp_path / "predict_out" / scan.name))
    theirs = nib.load(str(tmp_path / "bundle_out" / scan.name.replace(".nii.gz", "_seg.nii.gz")))
    original = nib.load(str(scan))
    assert ours.shape == theirs.shape == original.shape  # both on the scan's own grid
    np.testing.assert_allclose(theirs.affine, original.affine, atol=1e-4)
    mask, bundle_mask = np.asarray(ours.dataobj), np.asarray(theirs.dataobj)
    assert mask.any(), "predict's mask is empty: the comparison would say nothing"
    score = dice(bundle_mask, mask)
    print(f"bundle vs predict: Dice {score:.4f}, {int((mask != bundle_mask).sum())} of {mask.size} voxels differ")
    assert score >= 0.99


def test_metadata_holds_the_run_metrics_and_the_data_format(bundled: tuple[Path, dict]) -> None:
    run, meta = bundled
    metrics, config = runs.read_json(run / runs.METRICS), runs.read_json(run / runs.CONFIG)
    for field in ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version"):
        assert meta[field], field
    assert meta["heartseg"]["metrics"] == metrics and meta["heartseg"]["training_config"] == config
    assert meta["eval_metrics"]["val_mean_dice"] == metrics["best_val_dice"]
    assert meta["intended_use"] and meta["limitations"] and "float32" in meta["limitations"]
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["spatial_shape"] == config["roi_size"] and image["num_channels"] == 1 and image["is_patch_data"]
    assert pred["num_channels"] == 2 and pred["channel_def"] == {"0": "background", "1": "left atrium"}
    assert pred["format"] == "segmentation" and image["type"] == pred["type"] == "image"


def test_the_bundle_follows_the_run_values_and_decisions(bundled: tuple[Path, dict]) -> None:
    run, _ = bundled
    config = runs.read_json(run / runs.CONFIG)
    saved = json.loads((run / "export" / bundle.BUNDLE_DIR / bundle.INFERENCE).read_text())
    assert saved["inferer"]["roi_size"] == config["roi_size"] and saved["inferer"]["overlap"] == config["sw_overlap"]
    assert saved["inferer"]["sw_batch_size"] == config["sw_batch_size"]
    steps = {s["_target_"].rsplit(".", 1)[1]: s for s in saved["preprocessing"]["transforms"]}
    assert steps["Spacingd"]["pixdim"] == config["pixdim"] and steps["Orientationd"]["axcodes"] == "RAS"
    assert steps["DivisiblePadd"]["k"] == [4, 4, 4]  # the tiny UNet's two stride-2 levels
    post = [s["_target_"].rsplit(".", 1)[1] for s in saved["postprocessing"]["transforms"]]
    keeps = "KeepLargestConnectedComponentd" in post
    assert keeps == inference.run_keep_largest(run) and post[-1] == "SaveImaged"


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("unet", TINY["model_kwargs"]),
        (
            "dynunet",
            {"kernel_size": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 1]], "filters": [4, 8, 16]},
        ),
        ("segresnet", {"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]}),
    ],
)
def test_every_supported_network_takes_the_package_weights_strictly(name: str, kwargs: dict) -> None:
    from monai.bundle import ConfigParser

    from heartseg_utils.models import get_model

    ours = get_model(name, out_channels=2, **kwargs).eval()
    theirs = ConfigParser({"net": bundle.network_def({"model_name": name, "model_kwargs": kwargs, "out_channels": 2})})
    net = theirs.get_parsed_content("net").eval()
    net.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(net(x), ours(x))


def test_one_output_channel_is_a_sigmoid_without_channel_selection() -> None:
    steps = bundle.postprocessing({"out_channels": 1}, keep_largest=False)
    names = [s["_target_"].rsplit(".", 1)[1] for s in steps]
    assert names == ["Invertd", "AsDiscreted", "SaveImaged"]
    assert "torch.sigmoid" in bundle.probability_expression({"out_channels": 1}, tta=False)


@pytest.mark.parametrize("tta", [False, True])
def test_the_bundle_probability_averages_the_runs_flips(tta: bool) -> None:
    """MONAI's ConfigParser evaluates the bundle's ``probability``: softmax of the identity, plus with TTA the
    in-plane flips flipped back, averaged (a network that is not flip-symmetric tells them apart)."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    ramp = "$lambda x: torch.cat([x * torch.linspace(0, 2, x.shape[2]).view(1, 1, -1, 1, 1), -x], 1)"
    parser = ConfigParser({"inferer": {"_target_": "monai.inferers.SimpleInferer"}, "network": ramp})
    parser["probability"] = bundle.probability_expression({"out_channels": 2}, tta=tta)
    x = MetaTensor(torch.rand(1, 1, 6, 5, 4, generator=torch.Generator().manual_seed(0)), meta={"case": "c"})
    got = parser.get_parsed_content("probability")(x)

    def net(v: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.cat([v * torch.linspace(0, 2, v.shape[2]).view(1, 1, -1, 1, 1), -v], 1), 1)

    members = [net(x.as_tensor())] + [net(x.as_tensor().flip(d)).flip(d) for d in ([2], [3])][: 2 if tta else 0]
    torch.testing.assert_close(got.as_tensor(), torch.stack(members).mean(0))
    assert got.meta["case"] == "c"  # the image's metadata is kept for Invertd and SaveImaged
    if tta:  # the flips change the answer: a test that would pass without them says nothing
        assert not torch.allclose(got.as_tensor(), members[0])


def test_unsupported_and_foreign_runs_are_refused(bundled: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    run, _ = bundled
    scratch = tmp_path / "scratch_run"
    shutil.copytree(run, scratch, ignore=shutil.ignore_patterns("export"))
    config = runs.read_json(scratch / runs.CONFIG)
    runs.write_json({**config, "model_name": "unet3d_scratch", "model_kwargs": {}}, scratch / runs.CONFIG)
    assert cli.run(E.main, PROG, ["--run_dir", str(scratch), "--format", "bundle"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'unet3d_scratch' cannot be exported as a MONAI bundle" in line and "--format onnx" in line, line
    assert not (scratch / "export").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="'unet2d' cannot be exported"):
        bundle.network_def({**config, "model_name": "unet2d"})
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a finished training run"):
        bundle.export_bundle(tmp_path / "not_a_run")


def test_a_foreign_out_dir_is_refused_and_an_earlier_bundle_replaced(bundled: tuple[Path, dict], tmp_path: Path):
    run, _ = bundled
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds files the bundle export did not write"):
        bundle.export_bundle(run, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    bundle.export_bundle(run, foreign, overwrite=True)
    assert bundle.is_bundle(foreign) and (foreign / "notes.txt").read_text() == "mine"
    again = bundle.export_bundle(run, foreign)  # an earlier bundle of its own is replaced without --overwrite
    assert json.loads((foreign / bundle.METADATA).read_text()) == again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
