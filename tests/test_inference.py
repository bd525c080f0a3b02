"""Inference from a tiny trained run: predictions on the input grid, Dice from saved files, options, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from heartseg_utils import inference as I
from heartseg_utils import metrics as M
from heartseg_utils import precision as P
from tests._tiny_run import train_tiny_run


@pytest.fixture(scope="module")
def run_dir(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run shared by this module: conftest's tiny_config settings, one epoch."""
    return train_tiny_run(tiny_msd, tmp_path_factory.mktemp("inference") / "run")


@pytest.fixture(scope="module")
def predicted(run_dir: Path) -> list[dict]:
    return I.predict_run(run_dir, tta=False)  # data_dir "" = the dataset the run was trained on


def test_predictions_open_with_the_input_shape_and_affine(run_dir: Path, predicted: list[dict]) -> None:
    validation = json.loads((run_dir / "split.json").read_text())["validation"]
    assert [it["case"] for it in predicted] == validation
    assert sorted(p.name for p in (run_dir / "predictions").iterdir()) == sorted(f"{c}.nii.gz" for c in validation)
    for item in predicted:
        pred, image = nib.load(item["prediction"]), nib.load(item["image"])
        assert pred.shape == image.shape[:3]
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-5)
        assert pred.get_data_dtype() == np.uint8
        assert set(np.unique(np.asanyarray(pred.dataobj)).tolist()) <= {0, 1}


def test_dice_from_saved_files_matches_numpy(predicted: list[dict]) -> None:
    for item in predicted:
        pred = np.asanyarray(nib.load(item["prediction"]).dataobj) != 0
        label_img = nib.load(item["label"])
        truth = np.asanyarray(label_img.dataobj) != 0
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        got = M.evaluate_files(item["prediction"], item["label"])
        assert got["dice"] == pytest.approx(dice, abs=1e-9)
        assert got["volume_ml_true"] == pytest.approx(truth.sum() * np.prod(label_img.header.get_zooms()[:3]) / 1000)


def test_probability_mask_tta_and_keep_largest(run_dir: Path, predicted: list[dict]) -> None:
    model, config = I.load_run(run_dir, device="cpu")
    image_path = predicted[0]["image"]
    shape = nib.load(image_path).shape[:3]
    plain = I.predict_case(model, config, image_path)
    assert plain["probability"].shape == plain["mask"].shape == shape and plain["mask"].dtype == np.uint8
    assert 0.0 <= plain["probability"].min() and plain["probability"].max() <= 1.0
    np.testing.assert_array_equal(plain["mask"], plain["probability"] >= 0.5)
    np.testing.assert_array_equal(plain["mask"], np.asanyarray(nib.load(predicted[0]["prediction"]).dataobj))
    both = I.predict_case(model, config, image_path, tta=True, keep_largest=True)
    assert both["mask"].shape == both["probability"].shape == shape
    assert ndimage.label(both["mask"], structure=np.ones((3, 3, 3)))[1] <= 1
    assert not np.allclose(both["probability"], plain["probability"])  # the flips changed something


def test_flip_members_are_in_plane_and_average_to_the_tta_probability(run_dir: Path, predicted: list[dict]) -> None:
    """Identity first, then one flip per in-plane axis (never head-foot); their mean is the TTA probability."""
    model, config = I.load_run(run_dir, device="cpu")
    image_path = predicted[0]["image"]
    plain = I.predict_case(model, config, image_path, members=True)
    tta = I.predict_case(model, config, image_path, tta=True)
    assert I.TTA_AXES == (0, 1) and len(plain["members"]) == 3
    np.testing.assert_allclose(plain["members"][0], plain["probability"], atol=1e-6)  # the mask stays untouched
    np.testing.assert_allclose(np.mean(plain["members"], axis=0), tta["probability"], atol=1e-5)
    with pytest.raises(ValueError, match="tta_axes must be distinct axes"):
        I.predict_case(model, config, image_path, tta=True, tta_axes=(0, 3))


def test_largest_component_keeps_the_biggest_blob() -> None:
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:3, 1:3, 1:3], mask[5:9, 5:9, 5:9], mask[0, 9, 0] = 1, 1, 1
    kept = I.largest_component(mask)
    assert kept.sum() == 64 and kept[5:9, 5:9, 5:9].all()
    assert I.largest_component(np.zeros((3, 3, 3))).sum() == 0


def test_test_split_has_no_labels(run_dir: Path, tiny_msd: Path) -> None:
    items = I.predict_run(run_dir, data_dir=str(tiny_msd), split="test")
    assert len(items) == 1 and "label" not in items[0]
    assert nib.load(items[0]["prediction"]).shape == nib.load(items[0]["image"]).shape[:3]


def test_bad_run_dirs_are_clear_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*notebook 03"):
        I.load_run(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial, ignore=shutil.ignore_patterns("best_model.pt", "predictions"))
    with pytest.raises(FileNotFoundError, match="best_model.pt is missing.*notebook 03"):
        I.predict_run(partial)
    (partial / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        I.load_run(partial)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(run_dir, mismatched, ignore=shutil.ignore_patterns("predictions"))
    config = json.loads((mismatched / "config.json").read_text())
    config["model_kwargs"]["channels"] = [8, 16, 32]
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not fit"):
        I.load_run(mismatched)


def test_wrong_data_dir_and_split_are_clear_errors(run_dir: Path, tiny_msd: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_msd"
    (other / "imagesTr").mkdir(parents=True)
    (other / "labelsTr").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        shutil.copy(tiny_msd / sub / "la_001.nii.gz", other / sub / "xx_001.nii.gz")
    (other / "dataset.json").write_text(
        json.dumps(
            {
                "labels": {"0": "background", "1": "left atrium"},
                "training": [{"image": "./imagesTr/xx_001.nii.gz", "label": "./labelsTr/xx_001.nii.gz"}],
            }
        )
    )
    with pytest.raises(ValueError, match="wrong data_dir"):
        I.predict_run(run_dir, data_dir=str(other))
    with pytest.raises(ValueError, match="split must be one of"):
        I.split_items(run_dir, split="train")
    with pytest.raises(ValueError, match="shape"):
        I.save_prediction(np.zeros((2, 2, 2)), tiny_msd / "imagesTr" / "la_001.nii.gz", tmp_path / "x.nii.gz")


def test_slice_scrubber_draws_a_prediction_in_orange() -> None:
    """viz.slice_scrubber's `prediction` (added for notebook 04): orange where only predicted, yellow where both."""
    import base64
    import io

    import matplotlib.image as mpimg

    from heartseg_utils import viz

    image = np.full((24, 24, 12), 100, np.int16)
    image[0, 0, 0] = 0  # a grey-level window wider than one value
    truth, pred = np.zeros(image.shape, np.uint8), np.zeros(image.shape, np.uint8)
    truth[4:12, 4:12], pred[8:20, 8:20] = 1, 1

    def colours(widget) -> set:
        png = [o["data"]["image/png"] for o in widget.output.outputs if o["output_type"] == "display_data"][0]
        rgb = mpimg.imread(io.BytesIO(base64.b64decode(png)))[..., :3]
        return {
            name
            for name, colour in {"orange": viz.PRED_ONLY, "blue": viz.TRUTH_ONLY, "yellow": viz.BOTH}.items()
            if np.any(np.abs(rgb - 0.9 * np.asarray(colour)).max(axis=-1) < 0.08)
        }

    shown = viz.slice_scrubber(image, truth, alpha=0.9, prediction=pred, letters=False)  # letters are yellow too
    assert colours(shown) == {"orange", "blue", "yellow"}
    only_pred = viz.slice_scrubber(image, prediction=pred, alpha=0.9, letters=False)
    assert only_pred.overlay.value and colours(only_pred) == {"orange"}


def test_largest_component_keeps_only_the_biggest_blob() -> None:
    import numpy as np

    from heartseg_utils.inference import largest_component

    mask = np.zeros((12, 12, 12), np.uint8)
    mask[1:4, 1:4, 1:4] = 1  # 27 voxels
    mask[5:10, 5:10, 5:10] = 1  # 125 voxels
    mask[0, 11, 11] = 1  # a stray voxel
    kept = largest_component(mask)
    assert kept.sum() == 125 and kept[5:10, 5:10, 5:10].all() and kept.dtype == np.uint8


def test_prediction_asks_the_precision_decision(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference takes its precision from precision.amp_decision, following the run's recorded precision."""
    model, config = I.load_run(run_dir, "cpu")
    assert config["trained_with"] == {"device": "cpu", "amp": json.loads((run_dir / "metrics.json").read_text())["amp"]}
    bf16_run = {**config, "trained_with": {"device": "cpu", "amp": "bfloat16"}}
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: "avx512_bf16")  # a CPU with native bf16: as trained
    assert I.prediction_precision(model, bf16_run, model_device(model))[0] is torch.bfloat16
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: "")  # the same run on a CPU without: fp32, decided anew
    assert I.prediction_precision(model, bf16_run, model_device(model))[0] is None
    config = {**config, "trained_with": {}}  # a run without metrics.json: decided as for training
    image = I.split_items(run_dir)[0]["image"]
    asked = []
    real = P.amp_decision
    monkeypatch.setattr(I, "amp_decision", lambda amp, device, *a, **k: asked.append(amp) or real("off", device))
    fp32 = I.predict_case(model, config, image)
    I.predict_case(model, {**config, "amp": "off"}, image)
    assert asked == ["auto", "off"] and fp32["precision"] == "float32"
    monkeypatch.setattr(I, "amp_decision", lambda amp, device, *a, **k: real("on", device))  # bf16 on the CPU
    bf16 = I.predict_case(model, config, image)
    assert bf16["mask"].shape == fp32["mask"].shape and bf16["precision"] == "bfloat16"
    assert np.abs(bf16["probability"] - fp32["probability"]).max() < 0.1  # same model, 8-bit mantissa


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def test_largest_component_leaves_its_input_alone() -> None:
    """MONAI's KeepLargestConnectedComponent edits its input in place; the helper must work on a copy."""
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels
    mask[6:9, 6:9, 6:9] = 1  # 27 voxels: the largest
    out = I.largest_component(mask)
    assert int(out.sum()) == 27 and int(mask.sum()) == 35
