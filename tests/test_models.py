"""The model factory builds every named network, and each maps a patch to per-class logits."""

from __future__ import annotations

import pytest
import torch

from heartseg_utils.models import MODEL_NAMES, count_parameters, get_model, required_divisor

SMALL = {"unet": {"channels": (4, 8, 16), "strides": (2, 2)}, "segresnet": {"init_filters": 8},
         "unet3d_scratch": {"features": (4, 8, 16)}, "unet2d": {"channels": (4, 8, 16), "strides": (2, 2)}}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_a_patch_to_logits(name: str) -> None:
    model = get_model(name, out_channels=2, **SMALL[name]).eval()
    side = 2 * required_divisor(name, SMALL[name])
    with torch.no_grad():
        out = model(torch.randn(1, 1, side, side, side))
    assert out.shape == (1, 2, side, side, side)
    assert count_parameters(model) > 0


def test_unet_default_is_the_deep_dive_configuration() -> None:
    model = get_model("unet")
    assert (model.channels, model.strides, model.num_res_units, model.dropout) == ((16, 32, 64, 128, 256), (2, 2, 2, 2), 2, 0.2)
    assert count_parameters(model) == 4_808_917  # MONAI UNet 16-256, 2 res units, 2 outputs


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model_name 'vnet'.*unet, segresnet, unet3d_scratch"):
        get_model("vnet")


def test_unet2d_sees_each_axial_slice_alone() -> None:
    """The slice-wise 2D UNet: changing one axial slice changes the output of that slice only."""
    model = get_model("unet2d", **SMALL["unet2d"]).eval()
    x = torch.randn(1, 1, 8, 8, 5)
    y = x.clone()
    y[..., 2] += 1.0
    with torch.no_grad():
        diff = (model(x) - model(y)).abs().amax(dim=(0, 1, 2, 3))
    assert diff[2] > 0 and torch.all(diff[[0, 1, 3, 4]] == 0)
