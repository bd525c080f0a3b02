"""export: ONNX (and torch.export) files of a tiny run, checked with ONNX Runtime; the card says what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from heartseg_utils import export as E
from heartseg_utils import inference
from tests._tiny_run import train_tiny_run


@pytest.fixture(scope="module")
def exported(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = train_tiny_run(tiny_msd, tmp_path_factory.mktemp("export") / "run")
    return run, E.main(["--run_dir", str(run)])


def test_export_writes_checked_files_and_the_preprocessing_card(exported: tuple[Path, dict], capsys) -> None:
    run, info = exported
    out = run / "export"
    assert (out / "model.onnx").stat().st_size > 0 and "model.onnx" in info["files"]
    assert info["check"]["max_abs_diff"] <= 1e-3 and info["check"]["patch"] == [16, 16, 16]
    config = json.loads((run / "config.json").read_text())
    saved = json.loads((out / "export.json").read_text())
    assert saved["not_included"]["spacing_mm"] == config["pixdim"]
    assert saved["not_included"]["sliding_window"]["roi_size"] == config["roi_size"]
    assert saved["not_included"]["sliding_window"]["overlap"] == config["sw_overlap"]
    readme = (out / "README.md").read_text()
    assert "network only" in readme and "RAS" in readme and "z-score" in readme


def test_onnx_takes_any_batch_and_matches_pytorch(exported: tuple[Path, dict]) -> None:
    import onnxruntime as ort

    run, _ = exported
    model, _ = inference.load_run(run, "cpu")
    x = torch.randn(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    session = ort.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape == (3, 2, 16, 16, 16)
    np.testing.assert_allclose(E.foreground_probability(got), E.foreground_probability(expected), atol=1e-3)


def test_onnx_in_monai_sliding_window_matches_pytorch(exported: tuple[Path, dict], tiny_msd: Path) -> None:
    from monai.inferers import sliding_window_inference

    from heartseg_utils.config import transforms_from_config

    run, _ = exported
    model, config = inference.load_run(run, "cpu")
    image = transforms_from_config(config, "infer")({"image": str(min((tiny_msd / "imagesTs").iterdir()))})
    batch = image["image"].unsqueeze(0).float().as_tensor()
    window = {"roi_size": config["roi_size"], "sw_batch_size": config["sw_batch_size"], "overlap": config["sw_overlap"]}
    with torch.no_grad():
        expected = E.foreground_probability(sliding_window_inference(batch, predictor=model, **window))
    got = E.foreground_probability(
        sliding_window_inference(batch, predictor=E.onnx_predictor(run / "export" / "model.onnx"), **window)
    )
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_the_check_catches_a_different_network(exported: tuple[Path, dict]) -> None:
    run, _ = exported
    model, _ = inference.load_run(run, "cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    with pytest.raises(AssertionError, match="differs from PyTorch's"):
        E.check_onnx(model, run / "export" / "model.onnx", [16, 16, 16])


def test_torch_export_program_loads_and_matches(exported: tuple[Path, dict]) -> None:
    run, info = exported
    if "model.pt2" not in info["files"]:
        pytest.skip(f"torch.export was not written: {info['notes']}")
    model, _ = inference.load_run(run, "cpu")
    program = torch.export.load(str(run / "export" / "model.pt2")).module()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), atol=1e-4, rtol=1e-4)
