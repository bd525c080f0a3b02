"""Tests for heartseg_utils.plan: fingerprint, the planning rules on each phantom variant, resolve_auto, and a
short training per variant with the planned values."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from heartseg_utils import architecture, data, fingerprints, plan, synthetic
from heartseg_utils import config as C
from heartseg_utils.transforms import median_spacing


def fake_fp(spacings, shapes) -> dict:
    """A fingerprint with only the geometry the planner reads (spacing and cropped shape per case)."""
    cases = [
        {"case": f"c{i}", "spacing": list(map(float, s)), "cropped_shape": list(map(int, n))}
        for i, (s, n) in enumerate(zip(spacings, shapes))
    ]
    return {
        "n_cases": len(cases),
        "cases": cases,
        "label_values": [0, 1],
        "intensity": None,
        "median": {
            "spacing": np.median(spacings, axis=0).tolist(),
            "cropped_shape": np.median(shapes, axis=0).round().astype(int).tolist(),
        },
    }


# the variants trained by test_short_training_with_the_plan_learns, and their epochs. short_axis (real-size
# short-axis geometry) is planned and checked by the rule tests, but not trained here: its 1-minute CPU plan takes
# minutes per run today, which is the planner's real-size problem (planning by measured step time), not a test's.
EPOCHS = {"default": 25, "thick_slice": 25, "small": 15}

DEFAULT_FP = fake_fp([synthetic.DEFAULT_SPACING] * 20, [synthetic.DEFAULT_SHAPE] * 20)


@pytest.fixture(scope="module")
def variant_sets(tmp_path_factory) -> dict:
    """Six training cases of each geometry variant: {variant: (dataset folder, items, fingerprint)}."""
    out = {}
    for variant in synthetic.VARIANTS:
        folder = synthetic.make_synthetic_dataset(
            tmp_path_factory.mktemp(variant) / "ds", n_train=6, n_test=0, seed=5, variant=variant
        )
        items = data.validate_dataset(folder)
        out[variant] = (folder, items, fingerprints.fingerprint(items))
    return out


def _strides_follow_the_rules(p: dict) -> None:
    """Every pooled axis had a spacing <= 2x the finest poolable one, and the patch divides by the divisor."""
    sp, side = np.array(p["pixdim"], float), np.array(p["roi_size"], float)
    in_plane = np.array(p["model_kwargs"].get("kernel_size", [3, 3, 3])) == 3  # a 2D UNet never pools its slice axis
    for level in p["model_kwargs"]["strides"]:
        pooled = np.array(level) == 2
        assert pooled.any() and np.all(side[pooled] / 2 >= architecture.MIN_SIDE), (level, side)
        assert not np.any(pooled & ~in_plane), (level, in_plane)
        assert np.all(sp[pooled] <= 2 * sp[(side / 2 >= architecture.MIN_SIDE) & in_plane].min() + 1e-9), (level, sp)
        sp, side = sp * np.array(level), side / np.array(level)
    assert p["divisor"] == architecture.divisor_of(p["model_kwargs"]["strides"])
    assert all(r % d == 0 for r, d in zip(p["roi_size"], p["divisor"]))
    assert 1 <= len(p["model_kwargs"]["strides"]) <= architecture.MAX_POOLS


def test_fingerprint_reads_geometry_labels_and_intensities(variant_sets):
    _folder, items, fp = variant_sets["thick_slice"]
    assert fp["n_cases"] == 6 and fp["label_values"] == [0, 1]
    assert fp["median"]["spacing"] == pytest.approx(list(median_spacing(items)), abs=1e-3)
    for case, item in zip(fp["cases"], items):
        img = nib.load(item["image"])
        assert case["shape"] == list(img.shape)  # LPS-stored, but the axes are not permuted: same order
        assert all(c <= s for c, s in zip(case["cropped_shape"], case["shape"]))
        assert 8.0 <= case["spacing"][2] <= 10.0 and case["spacing"][:2] == [1.5, 1.5]
        i = case["intensity"]
        assert 0 <= i["p0.5"] <= i["p50"] <= i["p99.5"] <= 4095 and i["sd"] > 0
        assert 0 < case["foreground_fraction"] < 0.1
    assert json.loads(json.dumps(fp)) == fp
    assert fingerprints.fingerprint(items, max_cases=2)["n_cases"] == 2


def test_fingerprint_crops_to_the_image_foreground_in_ras_order(tmp_path):
    image = np.zeros((20, 30, 10), np.int16)
    image[2:12, 5:25, 1:9] = 100  # foreground box 10 x 20 x 8 (voxel axes i, j, k)
    label = np.zeros_like(image, dtype=np.uint8)
    label[4:8, 10:20, 3:6] = 1
    affine = np.array([[0, 0, 3.0, 0], [0.8, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])  # i -> y, j -> z, k -> x
    for name, arr in (("img", image), ("lbl", label)):
        nib.save(nib.Nifti1Image(arr, affine), tmp_path / f"{name}.nii.gz")
    fp = fingerprints.fingerprint(
        [{"case": "c", "image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lbl.nii.gz")}]
    )
    case = fp["cases"][0]
    assert case["spacing"] == [3.0, 0.8, 1.0] and case["shape"] == [10, 20, 30]
    assert case["cropped_shape"] == [8, 10, 20]
    assert case["foreground_fraction"] == pytest.approx(label.sum() / (10 * 20 * 8))
    assert case["intensity"]["p50"] == 100 and case["label_values"] == [0, 1]
    with pytest.raises(ValueError, match="at least one"):
        fingerprints.fingerprint([])


def test_target_spacing_is_the_median_or_the_10th_percentile_for_thick_slices():
    iso = fake_fp([(1.0, 1.0, 1.2), (1.2, 1.2, 1.4), (0.8, 0.8, 1.0)], [(100, 100, 80)] * 3)
    assert fingerprints.target_spacing(iso)[0] == [1.0, 1.0, 1.2]
    z = [5.0, 6.0, 8.0, 8.0, 9.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    thick = fake_fp([(1.4, 1.4, s) for s in z], [(200, 220, 12)] * 10)
    spacing, reason = fingerprints.target_spacing(thick)
    assert spacing[:2] == [1.4, 1.4] and spacing[2] == pytest.approx(np.percentile(z, 10)) and spacing[2] < 9.5
    assert "10th percentile" in reason
    many_slices = fake_fp([(1.4, 1.4, s) for s in z], [(200, 220, 150)] * 10)  # coarse but not few voxels
    assert fingerprints.target_spacing(many_slices)[0][2] == 9.5


def test_default_phantom_plans_notebook_03_cpu_defaults():
    p = plan.make_plan(DEFAULT_FP, device="cpu", time_budget_min=4.5)
    assert p["pixdim"] == [2.5, 2.5, 2.74] and p["roi_size"] == [48, 48, 48] and p["divisor"] == [16, 16, 16]
    assert (p["batch_size"], p["num_samples"], p["model_name"]) == (2, 2, "unet")
    kw = p["model_kwargs"]
    assert kw["channels"] == [16, 32, 64, 128, 256] and kw["strides"] == [[2, 2, 2]] * 4
    assert (kw["num_res_units"], kw["norm"], kw["dropout"]) == (2, "batch", 0.2)
    assert plan.make_plan(DEFAULT_FP, device="cpu")["roi_size"] == [48, 48, 48]  # 0 = notebook 03's budget
    assert json.loads(json.dumps(p)) == p


@pytest.mark.parametrize("variant", list(synthetic.VARIANTS))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_plan_rules_hold_on_every_variant(variant_sets, variant, device):
    fp = variant_sets[variant][2]
    p = plan.make_plan(fp, device=device, time_budget_min=4.5, gpu_memory_gib=80)
    median = fingerprints.resampled_shape(fp, p["pixdim"])
    assert p["median_shape"] == median
    assert all(r <= max(m, d) for r, m, d in zip(p["roi_size"], median, p["divisor"])), (p["roi_size"], median)
    _strides_follow_the_rules(p)
    assert set(p["reasons"]) >= {"pixdim", "roi_size", "batch_size", "model_kwargs", "divisor"}
    if device == "cpu":
        assert np.prod(median) <= plan.CPU_VOLUME_VOXELS and np.prod(p["roi_size"]) <= plan.CPU_PATCH_VOXELS
    else:
        assert p["pixdim"] == fingerprints.target_spacing(fp)[0] and max(p["roi_size"]) <= plan.GPU_MAX_SIDE


def test_thick_slices_are_not_pooled_along_z_until_in_plane_catches_up(variant_sets):
    fp = variant_sets["thick_slice"][2]
    gpu = plan.make_plan(fp, device="cuda", gpu_memory_gib=80)  # the 3D UNet (THICK_SLICE_NETWORK["cuda"])
    strides = gpu["model_kwargs"]["strides"]
    assert strides[0] == [2, 2, 1], strides
    assert any(s[2] == 2 for s in strides), "z is pooled once in-plane has caught up"
    assert gpu["divisor"][2] < gpu["divisor"][0] and gpu["roi_size"][2] < gpu["roi_size"][0]
    assert gpu["pixdim"][2] > 3 * gpu["pixdim"][0] and "kernel_size" not in gpu["model_kwargs"]


def test_timed_cpu_plans_use_a_2d_unet_for_thick_slices(variant_sets):
    """A timed CPU plan gives slices > 2x the in-plane voxels 3 x 3 x 1 kernels and no pooling across slices."""
    for variant, thick_axis in (("thick_slice", 2), ("short_axis", 0)):  # short-axis stacks lie along RAS x
        p = _timed(variant_sets[variant][2], minutes=12, speed=0.05)
        assert "kernel_size" not in plan.make_plan(variant_sets[variant][2], device="cpu")["model_kwargs"]  # untimed
        kw = p["model_kwargs"]
        assert p["pixdim"][thick_axis] > 2 * min(p["pixdim"]), p["pixdim"]
        assert kw["kernel_size"] == kw["up_kernel_size"] == [1 if a == thick_axis else 3 for a in range(3)]
        assert all(level[thick_axis] == 1 and 2 in level for level in kw["strides"]), kw["strides"]
        assert p["divisor"][thick_axis] == 1 and "2D MONAI UNet" in p["reasons"]["model_kwargs"]
    assert "kernel_size" not in _timed()["model_kwargs"]  # near-isotropic data keeps the 3D UNet


def test_the_network_choices_for_thick_slices_build(variant_sets):
    import torch

    fp = variant_sets["thick_slice"][2]
    p = plan.make_plan(fp, device="cpu")
    strides = architecture.pooling_strides(p["roi_size"], p["pixdim"])
    for choice, name in (("unet", "unet"), ("2d", "unet"), ("dynunet", "dynunet")):
        got, kw = architecture.planned_network(strides, p["pixdim"], choice)
        assert got == name
        out = architecture.build_unet(kw, model_name=got)(torch.randn(2, 1, *p["roi_size"]))
        assert out.shape == (2, 2, *p["roi_size"])
    assert architecture.level_kernels([[2, 2, 1], [2, 2, 2]], [1.0, 1.0, 4.0]) == [[3, 3, 1], [3, 3, 3], [3, 3, 3]]


@pytest.mark.parametrize("variant", list(synthetic.VARIANTS))
def test_planned_unet_builds_and_keeps_the_shape(variant_sets, variant):
    import torch

    p = plan.make_plan(variant_sets[variant][2], device="cpu")
    net = architecture.build_unet(p["model_kwargs"])
    x = torch.randn(2, 1, *p["roi_size"])
    out = net(x)
    assert out.shape == (2, 2, *p["roi_size"])
    out.mean().backward()
    assert all(q.grad is not None for q in net.parameters())


def test_cpu_plan_grows_with_the_time_budget():
    short, default, long = (plan.make_plan(DEFAULT_FP, device="cpu", time_budget_min=t) for t in (1, 4.5, 12))
    assert short["pixdim"][0] > default["pixdim"][0] > long["pixdim"][0] >= synthetic.DEFAULT_SPACING[0]
    assert np.prod(short["roi_size"]) < np.prod(default["roi_size"]) < np.prod(long["roi_size"])


def test_cpu_coarsens_in_plane_first_for_thick_slices():
    fp = fake_fp([(1.0, 1.0, 8.0)] * 5, [(300, 300, 12)] * 5)
    p = plan.make_plan(fp, device="cpu", time_budget_min=4.5)
    assert p["pixdim"][2] == 8.0 and 1.0 < p["pixdim"][0] <= 4.0
    assert np.prod(p["median_shape"]) <= plan.CPU_VOLUME_VOXELS


def test_gpu_plan_fits_a_mocked_memory_size():
    big = plan.make_plan(DEFAULT_FP, device="cuda", gpu_memory_gib=80)
    small = plan.make_plan(DEFAULT_FP, device="cuda", gpu_memory_gib=2)
    assert big["roi_size"] == [128, 128, 96] and big["pixdim"] == list(synthetic.DEFAULT_SPACING)
    assert np.prod(small["roi_size"]) < np.prod(big["roi_size"])
    used = plan.gpu_bytes(small["model_kwargs"], small["roi_size"], small["batch_size"] * small["num_samples"])
    assert used <= plan.GPU_MEMORY_FRACTION * 2 * plan.GIB
    assert plan.gpu_bytes(big["model_kwargs"], big["roi_size"], 4) > plan.GPU_MEMORY_FRACTION * 2 * plan.GIB
    with pytest.raises(ValueError, match="device"):
        plan.make_plan(DEFAULT_FP, device="tpu")


def _resolve(values: dict, items: list[dict]) -> tuple[dict, dict | None]:
    """plan.resolve_auto on a TrainConfig of ``values``; the resolved config as config.json would hold it."""
    cfg, p = plan.resolve_auto(C.TrainConfig(**values), items, "cpu")
    return C.config_dict(cfg), p


def test_resolve_auto_replaces_only_auto_values(variant_sets):
    items = variant_sets["small"][1]
    base = {
        "pixdim": [2.0, 2.0, 2.0],
        "roi_size": [16, 16, 16],
        "batch_size": 3,
        "model_name": "unet",
        "model_kwargs": {},
        "num_samples": 1,
        "time_budget_min": 4.5,
    }
    same, none = plan.resolve_auto(C.TrainConfig(**base), items, "cpu")
    assert none is None and same == C.TrainConfig(**base)

    auto = {**base, "pixdim": "auto", "roi_size": "auto", "batch_size": "auto", "model_name": "auto"}
    cfg, p = _resolve(auto, items)
    assert (cfg["pixdim"], cfg["roi_size"], cfg["batch_size"]) == (p["pixdim"], p["roi_size"], p["batch_size"])
    assert cfg["model_name"] == "unet" and cfg["model_kwargs"] == p["model_kwargs"] and cfg["num_samples"] == 1

    cfg, p = _resolve({**auto, "pixdim": [2.0, 2.0, 2.0]}, items)  # explicit spacing is kept
    assert cfg["pixdim"] == [2.0, 2.0, 2.0] and p["pixdim"] == [2.0, 2.0, 2.0]
    assert all(r <= max(m, d) for r, m, d in zip(cfg["roi_size"], p["median_shape"], p["divisor"]))

    cfg, _ = _resolve({**base, "roi_size": "auto"}, items)  # explicit plain UNet: divisor 16
    assert cfg["model_kwargs"] == {} and all(r % 16 == 0 for r in cfg["roi_size"])
    kw = {"channels": [8, 16, 32], "strides": [[2, 2, 1], [2, 2, 2]]}
    cfg, _ = _resolve({**base, "roi_size": "auto", "model_name": "auto", "model_kwargs": kw}, items)
    assert cfg["model_kwargs"] == kw and cfg["roi_size"][0] % 4 == 0 and cfg["roi_size"][2] % 2 == 0
    cfg, _ = _resolve({**base, "roi_size": "auto", "model_name": "segresnet"}, items)
    assert cfg["model_name"] == "segresnet" and all(r % 8 == 0 for r in cfg["roi_size"])

    cfg, p = _resolve({**base, "roi_size": [40, 24, 40], "model_name": "auto"}, items)
    assert cfg["roi_size"] == [40, 24, 40]  # explicit patch: the planned network divides it
    assert _resolve({**base, "roi_size": "[40, 24, 40]", "model_name": "auto"}, items)[0] == cfg
    assert all(r % d == 0 for r, d in zip(cfg["roi_size"], architecture.divisor_of(cfg["model_kwargs"]["strides"])))


def test_plan_table_gives_a_reason_for_every_setting():
    p = plan.make_plan(DEFAULT_FP, device="cpu")
    rows = plan.plan_table(p)
    settings = [r["setting"] for r in rows]
    assert {"pixdim (mm)", "roi_size", "batch_size", "num_samples", "model", "divisor"} <= set(settings)
    assert all(set(r) == {"setting", "value", "reason"} and r["reason"] for r in rows)
    assert next(r for r in rows if r["setting"] == "roi_size")["value"] == [48, 48, 48]
    assert "262,144" in next(r for r in rows if r["setting"] == "pixdim (mm)")["reason"]


def _otsu_dice(items: list[dict], cases: list[str]) -> float:
    """Mean Dice of a global Otsu threshold on the given cases: the baseline a model must beat."""
    from skimage.filters import threshold_otsu

    scores = []
    for item in (i for i in items if i["case"] in cases):
        x = np.asarray(nib.load(item["image"]).dataobj, np.float32)
        y = np.asarray(nib.load(item["label"]).dataobj) > 0
        mask = x > threshold_otsu(x)
        scores.append(2 * (mask & y).sum() / (mask.sum() + y.sum()))
    return float(np.mean(scores))


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(EPOCHS))
def test_short_training_with_the_plan_learns(variant_sets, variant, tmp_path):
    from heartseg_utils import train

    folder, items, fp = variant_sets[variant]
    p = plan.make_plan(fp, device="cpu", time_budget_min=1)  # a 1-minute plan: CI-sized
    # batch_size 1 (x 2 samples) gives 4 optimiser steps per epoch on 4 training cases instead of 2
    metrics = train.run_training(
        {
            "data_dir": str(folder),
            "run_dir": str(tmp_path / "run"),
            "max_epochs": EPOCHS[variant],
            "time_budget_min": 0,
            "seed": 0,
            "device": "cpu",
            "progress": False,
            "val_fraction": 0.34,
            "patience": 100,
            "pixdim": p["pixdim"],
            "roi_size": p["roi_size"],
            "batch_size": 1,
            "num_samples": p["num_samples"],
            "model_kwargs": p["model_kwargs"],
        }
    )
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    baseline = _otsu_dice(items, split["validation"])
    assert metrics["best_val_dice"] > max(baseline + 0.15, 0.35), (metrics, baseline)


# --------------------------------------------------------------------------------------------------
# Planning by measured step time (a fake timer makes each machine speed a test input)
# --------------------------------------------------------------------------------------------------
def _timer(seconds_per_megavoxel: float, calls: list | None = None):
    """A StepTimer for a machine whose training step costs this many seconds per million patch voxels."""

    def timer(name, kwargs, shape):
        if calls is not None:
            calls.append((name, tuple(shape)))
        return seconds_per_megavoxel * np.prod(shape) / 1e6, "off"

    return timer


def _timed(fp=DEFAULT_FP, minutes=4.5, speed=1.0, max_epochs=0, **kw) -> dict:
    return plan.make_plan(
        fp, device="cpu", time_budget_min=minutes, step_timer=_timer(speed), max_epochs=max_epochs, **kw
    )


def test_measured_plan_takes_the_largest_layout_with_enough_steps():
    p = _timed()
    timing, chosen = p["timing"], p["timing"]["chosen"]
    assert chosen["enough"] and chosen["steps"] >= plan.CPU_STEPS
    assert [p["pixdim"], p["roi_size"]] == [chosen["pixdim"], chosen["roi_size"]]
    bigger = [t for t in timing["tried"] if t["scale"] > chosen["scale"]]
    assert bigger and not any(t["enough"] for t in bigger)  # the next larger layout was tried and was too slow
    n_train, n_val = timing["n_train"], timing["n_val"]
    assert (n_train, n_val) == (16, 4)
    per_epoch = plan.epoch_seconds(chosen["step_seconds"], p, n_train, n_val)
    assert chosen["epochs"] == int(4.5 * 60 * plan.CPU_BUDGET_USE // per_epoch)
    assert "budget" in p["reasons"] and str(chosen["steps"]) in p["reasons"]["budget"]
    settings = {r["setting"] for r in plan.plan_table(p)}
    assert {"measured step (s)", "expected epochs / steps"} <= settings
    assert json.loads(json.dumps(p)) == p


def test_a_slower_machine_gets_a_coarser_smaller_plan_not_fewer_steps():
    fast, slow = _timed(speed=0.5), _timed(speed=2.0)
    assert np.prod(slow["roi_size"]) < np.prod(fast["roi_size"])
    assert slow["pixdim"][0] > fast["pixdim"][0]
    assert slow["timing"]["chosen"]["steps"] >= plan.CPU_STEPS and fast["timing"]["chosen"]["steps"] >= plan.CPU_STEPS
    longer = _timed(speed=2.0, minutes=18)  # 4x the minutes on the slow machine: the layout grows back
    assert np.prod(longer["roi_size"]) > np.prod(slow["roi_size"])


def test_max_epochs_caps_the_steps_a_plan_needs():
    few = _timed(speed=4.0, max_epochs=5)  # 5 epochs x 8 steps need far less than CPU_STEPS
    many = _timed(speed=4.0)
    assert few["timing"]["chosen"]["steps"] <= 5 * 8 < plan.CPU_STEPS
    assert np.prod(few["roi_size"]) > np.prod(many["roi_size"])


def test_an_impossible_budget_ends_on_the_smallest_layout():
    p = _timed(speed=1000.0)
    assert not p["timing"]["chosen"]["enough"] and p["timing"]["chosen"]["scale"] == plan.CPU_SCALES[-1]


def test_no_budget_or_a_gpu_is_never_timed():
    calls: list = []
    for kwargs in ({"device": "cpu", "time_budget_min": 0}, {"device": "cuda", "time_budget_min": 4.5}):
        p = plan.make_plan(DEFAULT_FP, step_timer=_timer(1.0, calls), gpu_memory_gib=80, **kwargs)
        assert "timing" not in p and "budget" not in p["reasons"]
    assert calls == []
    assert plan.make_plan(DEFAULT_FP, device="cpu", step_timer=_timer(1.0))["roi_size"] == [48, 48, 48]


def test_an_explicit_model_is_timed_as_chosen():
    calls: list = []
    p = plan.make_plan(
        DEFAULT_FP, device="cpu", time_budget_min=4.5, step_timer=_timer(1.0, calls), divisor=[8, 8, 8],
        model=("segresnet", {}),
    )  # fmt: skip
    assert calls and {name for name, _ in calls} == {"segresnet"}
    assert all(r % 8 == 0 for r in p["roi_size"]) and p["model_name"] == "segresnet"


def test_epoch_seconds_counts_steps_and_validation_windows():
    layout = {"batch_size": 2, "num_samples": 2, "roi_size": [48, 48, 48], "median_shape": [48, 96, 100]}
    windows = 1 * 3 * 3  # ceil((96 - 48) / 36) + 1 = 3 and ceil(52 / 36) + 1 = 3
    expected = plan.CPU_STEP_OVERHEAD * 8 * 0.5 + 4 * windows * 0.5 / 12
    assert plan.epoch_seconds(0.5, layout, n_train=16, n_val=4) == pytest.approx(expected)


def test_measured_step_times_the_real_network(monkeypatch):
    from heartseg_utils import precision

    kw = {"channels": [4, 8], "strides": [[2, 2, 2]], "num_res_units": 0}
    seconds, dtype = plan.measured_step("unet", kw, (2, 1, 16, 16, 16), "off")
    assert seconds > 0 and dtype == "off"
    monkeypatch.setenv(precision.NO_BF16_ENV, "1")  # a CPU without native bf16 times fp32 only
    assert plan.measured_step("unet", kw, (2, 1, 16, 16, 16))[1] == "off"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: "avx512_bf16")
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda *a, **k: (0.2, 0.1))
    assert precision.train_step_seconds(None, (2, 1, 8, 8, 8)) == (0.1, "bfloat16")
    assert precision.train_step_seconds(architecture.build_unet(kw), (2, 1, 8, 8, 8), fp32_only=True)[1] == "off"
