"""Multi-class runs (issue 22): label_mode, class mapping, per-class validation, post-processing and label maps."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg_utils import config as C
from heartseg_utils import inference, metrics, predict, runs
from heartseg_utils.transforms import get_transforms, map_label_values
from tests._tiny_run import TINY

LABELS = {"0": "background", "1": "left ventricle", "2": "myocardium", "3": "right ventricle"}


@pytest.fixture(scope="module")
def multi_msd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small phantom cases labelled lv, myo, rv (1, 2, 3) and one test image."""
    from heartseg_utils.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("multi") / "Heart_multi",
        n_train=6,
        n_test=1,
        seed=3,
        shape=(64, 64, 48),
        labels="lv,myo,rv",
    )


@pytest.fixture(scope="module")
def multi_run(multi_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny UNet of TINY trained for two epochs on the multi-label phantom."""
    from heartseg_utils.train import run_training

    run_dir = tmp_path_factory.mktemp("multi_run") / "run"
    result = run_training({**TINY, "data_dir": str(multi_msd), "run_dir": str(run_dir), "max_epochs": 2})
    return run_dir, result


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / runs.HISTORY).open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------------
# Resolving the label mode
# --------------------------------------------------------------------------------------------------
def test_auto_is_binary_for_one_label_and_multiclass_for_several() -> None:
    one = C.resolve_labels(C.TrainConfig(), {"0": "background", "1": "left atrium"})
    assert (one.label_mode, one.label_values, one.label_names, one.out_channels) == ("binary", "auto", "auto", 2)
    many = C.resolve_labels(C.TrainConfig(), LABELS)
    assert many.label_mode == "multiclass" and many.label_values == [0, 1, 2, 3] and many.out_channels == 4
    assert many.label_names == ["background", "left ventricle", "myocardium", "right ventricle"]
    forced = C.resolve_labels(C.TrainConfig(label_mode="binary"), LABELS)
    assert forced.label_mode == "binary" and forced.out_channels == 2  # today's union of every label


def test_a_sigmoid_loss_is_refused_for_several_classes() -> None:
    with pytest.raises(ValueError, match="loss_name 'bce'.*label_mode 'multiclass'.*dicece, dice"):
        C.TrainConfig(loss_name="bce", label_mode="multiclass")
    with pytest.raises(ValueError, match="loss_name 'bce'.*label_mode 'multiclass'"):
        C.resolve_labels(C.TrainConfig(loss_name="bce"), LABELS)  # "auto" becomes multiclass, then refuses
    assert C.resolve_labels(C.TrainConfig(loss_name="bce"), {"0": "background", "1": "la"}).out_channels == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ({"label_values": [1, 2]}, "background 0 first"),
        ({"label_values": [0, 1, 1]}, "distinct"),
        ({"label_values": [0, 1], "label_names": ["background"]}, "one name per entry"),
    ],
)
def test_bad_label_values_are_clear_errors(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        C.TrainConfig(label_mode="multiclass", **override)


def test_label_values_from_the_command_line_are_json() -> None:
    cfg = C.TrainConfig(label_mode="multiclass", label_values="[0, 1, 3]", label_names='["bg", "lv", "rv"]')
    assert cfg.label_values == [0, 1, 3] and cfg.out_channels == 3


def test_values_that_are_not_0_to_k_map_to_classes_and_back() -> None:
    label = np.array([0, 1, 2, 4, 4, 7])
    assert map_label_values(label, (0, 1, 2, 4)).tolist() == [0, 1, 2, 3, 3, 0]  # 7 is not a class: background
    probabilities = np.zeros((3, 4), np.float32)  # three classes, four voxels
    probabilities[:, 0] = 0.1  # background wins (0.7)
    probabilities[0, 1], probabilities[1, 2], probabilities[2, 3] = 0.9, 0.6, 0.8
    assert inference.class_label_map(probabilities, [0, 1, 2, 4])["mask"].tolist() == [0, 1, 2, 4]


def test_multiclass_training_patches_keep_every_class(multi_msd: Path) -> None:
    """The train pipeline maps the classes and samples patches with RandCropByLabelClassesd (not pos/neg)."""
    from heartseg_utils.data import load_datalist

    pipeline = get_transforms("train", pixdim=(2.5, 2.5, 2.74), roi_size=(16, 16, 16), label_values=(0, 1, 2, 3))
    assert "RandCropByLabelClassesd" in [type(t).__name__ for t in pipeline.transforms]
    patches = pipeline(load_datalist(multi_msd)[0])
    assert set(np.unique(np.concatenate([np.asarray(p["label"]).ravel() for p in patches]))) <= {0, 1, 2, 3}
    binary = get_transforms("train", pixdim=(2.5, 2.5, 2.74), roi_size=(16, 16, 16))
    assert "RandCropByPosNegLabeld" in [type(t).__name__ for t in binary.transforms]


def test_class_dice_is_monai_dice_without_background() -> None:
    """metrics.class_dice (validation's rule) gives MONAI DiceMetric(include_background=False) where classes exist."""
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(0)
    pred, truth = rng.integers(0, 4, (2, 12, 12, 8)), rng.integers(0, 4, (2, 12, 12, 8))
    metric = DiceMetric(include_background=False, reduction="none")
    monai = metric(*(one_hot(torch.as_tensor(a)[:, None], num_classes=4) for a in (pred, truth))).numpy()
    ours = np.array([metrics.class_dice(p, t, (1, 2, 3)) for p, t in zip(pred, truth)])
    np.testing.assert_allclose(ours, monai, atol=1e-6)
    assert metrics.class_dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1,)) == [1.0]  # absent from both: 1


# --------------------------------------------------------------------------------------------------
# A tiny multi-class run, end to end
# --------------------------------------------------------------------------------------------------
def test_a_multiclass_run_records_its_classes_and_per_class_dice(multi_run: tuple[Path, dict]) -> None:
    run_dir, result = multi_run
    saved = runs.read_json(run_dir / runs.CONFIG)
    assert saved["label_mode"] == "multiclass" and saved["out_channels"] == 4
    assert saved["label_values"] == [0, 1, 2, 3] and saved["label_names"][1:] == list(LABELS.values())[1:]
    rows = _history(run_dir)
    columns = ["val_dice_left_ventricle", "val_dice_myocardium", "val_dice_right_ventricle"]
    assert list(rows[0]) == [*runs.HISTORY_FIELDS, *columns] and len(rows) == 2
    for row in rows:  # val_dice is the mean over the classes
        assert float(row["val_dice"]) == pytest.approx(np.mean([float(row[c]) for c in columns]), abs=2e-6)
    per_class = result["best_val_dice_per_class"]
    assert list(per_class) == list(LABELS.values())[1:]
    best = rows[result["best_epoch"] - 1]
    assert [per_class[n] for n in per_class] == [float(best[c]) for c in columns]
    assert runs.read_json(run_dir / runs.METRICS)["best_val_dice_per_class"] == per_class


def test_a_multiclass_run_decides_post_processing_per_class(multi_run: tuple[Path, dict]) -> None:
    run_dir, _ = multi_run
    post = runs.read_json(run_dir / runs.POSTPROCESSING)
    assert list(post["classes"]) == list(LABELS.values())[1:]
    for name, decision in post["classes"].items():
        better = decision["val_dice_largest_component"] > decision["val_dice_raw"]
        assert decision["keep_largest"] is better, name
    kept = [d["label_value"] for d in post["classes"].values() if d["keep_largest"]]
    assert post["keep_largest_values"] == kept and post["keep_largest"] is bool(kept)
    assert inference.run_keep_largest(run_dir) == kept


def test_predict_writes_label_maps_with_the_dataset_values(multi_run: tuple[Path, dict], tmp_path: Path) -> None:
    """A label map on the input's grid, only the dataset's values, and a volume per class in the report."""
    run_dir, _ = multi_run
    scan = Path(runs.read_json(run_dir / runs.CONFIG)["dataset_dir"]) / "imagesTs" / "la_007.nii.gz"
    [report] = predict.predict(run_dir, scan, tmp_path / "mask.nii.gz", progress=False)
    saved, source = nib.load(report["mask"]), nib.load(str(scan))
    labels = np.asanyarray(saved.dataobj)
    assert saved.shape == source.shape and np.allclose(saved.affine, source.affine)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert list(report["classes"]) == list(LABELS.values())[1:]
    for name, entry in report["classes"].items():
        assert entry["n_voxels"] == int((labels == entry["label_value"]).sum()), name
        assert entry["volume_ml"] == pytest.approx(
            metrics.volume_ml(labels == entry["label_value"], (1.25, 1.25, 1.37)), abs=1e-3
        )
    assert sum(c["n_voxels"] for c in report["classes"].values()) == report["n_voxels"]
    assert "right ventricle" in predict.format_report(report)
    assert report["qc"]["fitted"] and list(report["qc"]["classes"]) == list(report["classes"])  # QC per class


def test_a_multiclass_run_decides_flip_tta_on_the_macro_dice(multi_run: tuple[Path, dict]) -> None:
    run_dir, result = multi_run
    post = runs.read_json(run_dir / runs.POSTPROCESSING)
    assert post["tta"] is (post["val_dice_tta"] > post["val_dice_no_tta"]) and result["tta"] is post["tta"]
    assert post["val_dice_raw"] == pytest.approx(post["val_dice_tta" if post["tta"] else "val_dice_no_tta"], abs=1e-6)
    assert inference.run_tta(run_dir) is post["tta"]


def test_a_multiclass_run_fits_quality_control_per_class(multi_run: tuple[Path, dict]) -> None:
    """qc.json holds one binary QC record per class: its own training ranges, temperature and validation scores."""
    run_dir, _ = multi_run
    record = runs.read_qc(run_dir)
    assert record["label_mode"] == "multiclass" and list(record["classes"]) == list(LABELS.values())[1:]
    volumes = []
    for value, (name, sub) in enumerate(record["classes"].items(), start=1):
        assert sub["label_value"] == value and len(sub["validation"]) == 2, name  # TINY: 2 validation cases
        assert sub["temperature"]["ece_after"] >= 0 and sub["reference"]["n_cases"] == 4, name
        volumes.append(sub["reference"]["measurements"]["volume_ml"]["median"])
    assert len(set(volumes)) == len(volumes)  # each class measured on its own label, not the union


def test_qc_flags_the_class_that_went_missing(multi_run: tuple[Path, dict]) -> None:
    """The same scan with one class erased: only that class's reasons appear, named, and the scan needs review."""
    from heartseg_utils import qc_run

    run_dir, _ = multi_run
    record, (model, config) = runs.read_qc(run_dir), inference.load_run(run_dir)
    scan = Path(config["dataset_dir"]) / "imagesTs" / "la_007.nii.gz"
    result = inference.predict_case(model, config, scan, members=True)
    assert result["class_members"].shape[:2] == (3, 3)  # identity + 2 in-plane flips, 3 classes
    voxels = qc_run.read_scan(scan)[0]
    as_is = qc_run.assess_prediction(record, result, voxels)
    erased = {**result, "mask": np.where(result["mask"] == 2, 0, result["mask"])}
    block = qc_run.assess_prediction(record, erased, voxels)
    assert block["needs_review"] and block["classes"]["myocardium"]["needs_review"]
    named = [r for r in block["reasons"] if r.startswith("myocardium: ")]
    assert any("empty mask" in r for r in named), named
    for name in ("left ventricle", "right ventricle"):  # the other classes are scored exactly as before
        assert block["classes"][name] == as_is["classes"][name], name
    assert set(block["reasons"]) - set(as_is["reasons"]) == set(named) - set(as_is["reasons"])
    fitted = all(sub["quality_model"] for sub in record["classes"].values())  # TINY's 2 validation cases: none
    assert block["quality_score"] == (0.0 if fitted else None)  # an empty class scores 0, the scan its lowest
    with pytest.raises(ValueError, match="multi-class qc.json needs a multi-class prediction"):
        qc_run.assess_prediction(record, {k: v for k, v in result.items() if k != "probabilities"}, voxels)


def test_values_other_than_0_to_k_come_back_in_predictions(multi_msd: Path, tmp_path: Path) -> None:
    """A dataset labelled 0, 1, 2, 5 trains classes 0..3 and predicts the values 0, 1, 2, 5."""
    from heartseg_utils.train import run_training

    data = shutil.copytree(multi_msd, tmp_path / "Heart_125")
    for path in (data / "labelsTr").glob("*.nii.gz"):
        img = nib.load(str(path))
        voxels = np.asarray(img.dataobj)
        nib.save(nib.Nifti1Image(np.where(voxels == 3, 5, voxels).astype(np.uint8), img.affine), str(path))
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "left ventricle", "2": "myocardium", "5": "right ventricle"}
    (data / "dataset.json").write_text(json.dumps(meta))
    run_dir = tmp_path / "run"
    run_training({**TINY, "data_dir": str(data), "run_dir": str(run_dir), "max_epochs": 1})
    assert runs.read_json(run_dir / runs.CONFIG)["label_values"] == [0, 1, 2, 5]
    [item] = inference.predict_run(run_dir, split="test", keep_largest=False)
    values = set(np.unique(np.asanyarray(nib.load(item["prediction"]).dataobj)).tolist())
    assert values <= {0, 1, 2, 5} and 3 not in values


def test_binary_runs_keep_todays_files(tiny_config: dict) -> None:
    """A one-label dataset trains as before: 2 channels, history.csv's own columns, keep_largest a bool only."""
    from heartseg_utils.train import run_training

    result = run_training({**tiny_config, "max_epochs": 1})
    run_dir = Path(tiny_config["run_dir"])
    saved = runs.read_json(run_dir / runs.CONFIG)
    assert (saved["label_mode"], saved["label_values"], saved["out_channels"]) == ("binary", "auto", 2)
    assert list(_history(run_dir)[0]) == list(runs.HISTORY_FIELDS)
    assert "best_val_dice_per_class" not in result
    post = runs.read_json(run_dir / runs.POSTPROCESSING)
    assert isinstance(post["keep_largest"], bool) and not {"keep_largest_values", "classes"} & set(post)
    assert {"tta", "tta_axes", "val_dice_raw", "val_dice_largest_component"} <= set(post)  # the binary decisions
    assert (run_dir / runs.QC).is_file()  # binary runs fit their quality control


# --------------------------------------------------------------------------------------------------
# Per-class evaluation
# --------------------------------------------------------------------------------------------------
def test_evaluate_classes_scores_each_class_and_the_macro_mean() -> None:
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[1:4, 1:4, 1:4], truth[6:9, 6:9, 6:9] = 1, 3
    pred = truth.copy()
    pred[1, 1:4, 1:4] = 0  # class 1 loses a third of its voxels; class 3 is perfect
    rows = metrics.evaluate_classes(pred, truth, (1.0, 1.0, 1.0), {1: "lv", 3: "rv"})
    assert [(r["class"], r["label_value"]) for r in rows] == [("lv", 1), ("rv", 3)]
    assert rows[0]["dice"] == pytest.approx(2 * 18 / (18 + 27)) and rows[1]["dice"] == 1.0
    assert rows[0]["volume_ml_true"] == pytest.approx(0.027)
    summary = metrics.summarize_classes(rows + rows)
    assert summary["classes"]["rv"]["dice"] == 1.0 and summary["classes"]["lv"]["n_cases"] == 2
    assert summary["macro"]["dice"] == pytest.approx((rows[0]["dice"] + 1.0) / 2)


# --------------------------------------------------------------------------------------------------
# Export: ONNX and the MONAI bundle carry the classes
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_fp32_run(multi_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch multi-class run in fp32 (predict and the float32 bundle then compute alike)."""
    from heartseg_utils.train import run_training

    run_dir = tmp_path_factory.mktemp("multi_fp32") / "run"
    run_training({**TINY, "data_dir": str(multi_msd), "run_dir": str(run_dir), "max_epochs": 1, "amp": "off"})
    return run_dir


def test_the_exports_carry_the_classes(multi_fp32_run: Path, multi_msd: Path, tmp_path: Path) -> None:
    """export.json names the classes; the bundle writes predict's label map with the dataset's values."""
    from heartseg_utils import bundle
    from heartseg_utils import export as E
    from tests.test_bundle import _run_bundle

    info = E.export_run(multi_fp32_run)
    card = json.loads((multi_fp32_run / "export" / "export.json").read_text())
    assert (card["label_mode"], card["n_classes"], card["label_values"]) == ("multiclass", 4, [0, 1, 2, 3])
    assert info["check"]["max_abs_diff"] <= 1e-3
    meta = E.main(["--run_dir", str(multi_fp32_run), "--format", "bundle"])
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 4 and pred["channel_def"]["3"] == "right ventricle"
    scan = min((multi_msd / "imagesTs").iterdir())
    _run_bundle(multi_fp32_run / "export" / bundle.BUNDLE_DIR, multi_msd, tmp_path / "bundle_out")
    [report] = predict.predict(multi_fp32_run, scan, tmp_path / "ours.nii.gz", progress=False)
    ours = np.asanyarray(nib.load(report["mask"]).dataobj)
    theirs = np.asanyarray(nib.load(str(tmp_path / "bundle_out" / scan.name.replace(".nii.gz", "_seg.nii.gz"))).dataobj)
    assert ours.shape == theirs.shape and set(np.unique(theirs)) <= {0, 1, 2, 3}
    assert np.mean(ours == theirs) >= 0.99, f"{int((ours != theirs).sum())} voxels differ"


# --------------------------------------------------------------------------------------------------
# Notebooks 03 and 04 on a multi-label folder
# --------------------------------------------------------------------------------------------------
def _stdout(notebook: Path) -> str:
    """Everything an executed notebook printed (its stream outputs), in cell order."""
    import nbformat

    cells = nbformat.read(str(notebook), as_version=4).cells
    streams = [o for c in cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stdout"]
    return "".join(o["text"] for o in streams)


@pytest.mark.slow
def test_notebooks_03_04_07_08_train_score_and_use_every_class(multi_msd: Path, tmp_path: Path) -> None:
    """03 with data_dir set (and a short run) trains a multi-class model; 04's per-class evaluation.csv is what the
    saved label maps give when scored again here; 07 prints each class's volume from predict's reports; 08 scores
    every scan with the per-class qc.json and reports the macro Dice."""
    import pandas as pd
    import papermill

    from tests.conftest import REPO, SERIES_CELL_TIMEOUT_S

    common = {"kernel_name": "python3", "cwd": str(tmp_path), "progress_bar": False}
    short = {"data_dir": str(multi_msd), "time_budget_min": 0, "max_epochs": 3, "roi_size": [32, 32, 32]}
    steps = (("03_train", short), ("04_evaluate", {"cases_to_show": 1}), ("07_use_the_model", {"max_test_cases": 1}))
    steps += (("08_trust", {"max_cases": 1, "shift_kinds": ["inversion"]}),)
    for name, parameters in steps:
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{name}.ipynb"),
            str(tmp_path / f"{name}_out.ipynb"),
            parameters=parameters,
            execution_timeout=SERIES_CELL_TIMEOUT_S,
            **common,
        )
    run_dir = tmp_path / "runs" / "03_train"
    saved = runs.read_json(run_dir / runs.CONFIG)
    assert saved["label_mode"] == "multiclass" and saved["out_channels"] == 4
    assert "val_dice_right_ventricle" in _history(run_dir)[0]
    table = pd.read_csv(run_dir / "evaluation.csv")
    assert list(table.columns[:3]) == ["case", "class", "label_value"]
    assert table["needs_review"].notna().all() and {"quality_score"} <= set(table.columns)  # QC per class
    split = runs.read_split(run_dir)
    assert sorted(set(table["case"])) == sorted(split["validation"]) and len(table) == 3 * len(split["validation"])
    classes = C.class_names(saved)
    for case, rows in table.groupby("case"):
        again = metrics.evaluate_class_files(
            run_dir / "predictions" / f"{case}.nii.gz", multi_msd / "labelsTr" / f"{case}.nii.gz", classes
        )
        for row, fresh in zip(rows.to_dict("records"), again):
            assert row["class"] == fresh["class"]
            for key in ("dice", "iou", "precision", "recall", "volume_ml_pred", "volume_ml_true"):
                assert row[key] == pytest.approx(fresh[key], abs=1e-9), (case, row["class"], key)
    summary = json.loads((run_dir / "evaluation_summary.json").read_text())
    assert set(summary["classes"]) == set(classes.values())
    assert summary["macro"]["dice"] == pytest.approx(table.groupby("class")["dice"].mean().mean())
    printed = _stdout(tmp_path / "07_use_the_model_out.ipynb")
    out = tmp_path / "runs" / "07_use_the_model"
    [test_report] = [json.loads(f.read_text()) for f in (out / "test").glob("*.heartseg.json")]
    dicom_report = json.loads(predict.report_path(out / "phantom" / "mask_from_dicom.nii.gz").read_text())
    for report in (test_report, dicom_report):  # the gallery's and the report's lines: one volume per class
        assert list(report["classes"]) == list(classes.values())
        for name, entry in report["classes"].items():
            assert f"{name} {entry['volume_ml']:.1f} mL" in printed, (name, report["input"])
    for name in classes.values():  # each class against the phantom's truth, and the export compared per class
        reported = f"{name}: reported {dicom_report['classes'][name]['volume_ml']:.1f} mL, true "
        assert re.search(rf"^{re.escape(reported)}[0-9.]+ mL \| Dice [0-9.]+", printed, re.M), name
        assert re.search(rf"^{re.escape(name)}: largest probability difference [0-9.e+-]+$", printed, re.M), name
    predicted = set(np.unique(np.asanyarray(nib.load(out / "phantom" / "mask_from_nifti.nii.gz").dataobj)).tolist())
    assert {f.name for f in (out / "phantom").glob("mask*.stl")} == {f"mask_{v}.stl" for v in predicted - {0}}
    trust = _stdout(tmp_path / "08_trust_out.ipynb")
    assert "multi-class run, classes [1, 2, 3]" in trust and "qc.json: one record per class" in trust
    assert re.search(r"^The flag caught \d+ of \d+ failures", trust, re.M)  # scored by the per-class qc.json


# --------------------------------------------------------------------------------------------------
# Pictures: one colour per class, a legend, one surface per class
# --------------------------------------------------------------------------------------------------
def _label_map() -> np.ndarray:
    labels = np.zeros((12, 12, 8), np.uint8)
    labels[2:6, 2:6, 2:6], labels[7:10, 7:10, 3:6] = 1, 3
    return labels


def test_each_class_gets_its_palette_colour_and_a_legend() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from heartseg_utils import viz

    labels = _label_map()
    colours = viz.class_colours([0, 3, 1])
    assert colours == {1: viz.PALETTE[0], 3: viz.PALETTE[1]}
    grey = np.zeros((12, 12))
    rgb = viz.label_rgb(grey, labels[:, :, 3], colours=colours, alpha=1.0)
    np.testing.assert_allclose(rgb[3, 3], viz.PALETTE[0])
    np.testing.assert_allclose(rgb[8, 8], viz.PALETTE[1])
    assert rgb[0, 0].tolist() == [0.0, 0.0, 0.0]  # background stays grey (black here)
    shifted = np.roll(labels[:, :, 3], 1, axis=0)
    outlined = viz.label_rgb(grey, labels[:, :, 3], shifted, colours=colours, alpha=0.0)
    np.testing.assert_allclose(outlined[6, 3], viz.PALETTE[0])  # the prediction's outline, off the truth
    assert viz.is_label_map(labels) and not viz.is_label_map(labels > 0)
    fig = viz.show_planes(np.ones(labels.shape), labels, classes={1: "lv", 3: "rv"})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["1 lv", "3 rv"]
    binary = viz.show_planes(np.ones(labels.shape), labels > 0)
    assert not binary.legends  # the binary look stays
    box = viz.slice_scrubber(np.ones(labels.shape), labels, prediction=labels, classes={1: "lv", 3: "rv"})
    assert "image/png" in box._repr_mimebundle_()


def test_one_surface_per_class() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from heartseg_utils import surface

    fig = surface.plot_class_surfaces(_label_map(), (1.0, 1.0, 2.0), {1: "lv", 2: "myo", 3: "rv"})
    assert sorted(fig.surfaces) == [1, 3]  # myo is absent from this map
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["lv", "myo (absent)", "rv"]
    verts, _ = fig.surfaces[3]
    assert (verts[:, 2].min(), verts[:, 2].max()) == pytest.approx((5.0, 11.0))  # z 3..5 +- half a voxel, 2 mm
