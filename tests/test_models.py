"""The model registry builds every named network, each maps a patch to per-class logits, divisors are per axis."""

from __future__ import annotations

import pytest
import torch

from heartseg_utils.models import MODEL_NAMES, MODELS, count_parameters, get_model, model_kwargs, required_divisor

SMALL = {
    "unet": {"channels": (4, 8, 16), "strides": (2, 2)},
    "segresnet": {"init_filters": 8},
    "unet3d_scratch": {"features": (4, 8, 16)},
    "unet2d": {"channels": (4, 8, 16), "strides": (2, 2)},
    "dynunet": {"kernel_size": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2]], "filters": [4, 8, 16]},
}


def test_names_derive_from_the_registry() -> None:
    assert MODEL_NAMES == tuple(MODELS) and set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_a_patch_to_logits(name: str) -> None:
    model = get_model(name, out_channels=2, **SMALL[name]).eval()
    shape = tuple(2 * d for d in required_divisor(name, SMALL[name]))
    with torch.no_grad():
        out = model(torch.randn(1, 1, *shape))
    assert out.shape == (1, 2, *shape)
    assert count_parameters(model) > 0


def test_unet_default_is_the_deep_dive_configuration() -> None:
    model = get_model("unet")
    assert (model.channels, model.strides, model.num_res_units, model.dropout) == (
        (16, 32, 64, 128, 256),
        (2, 2, 2, 2),
        2,
        0.2,
    )
    assert count_parameters(model) == 4_808_917  # MONAI UNet 16-256, 2 res units, 2 outputs
    assert required_divisor("unet") == (16, 16, 16)


def test_per_axis_strides_give_per_axis_divisors_and_shapes() -> None:
    """Thick slices: no pooling along z in the first level; the divisor and the network agree."""
    kw = {
        "channels": [4, 8, 16],
        "strides": [[2, 2, 1], [2, 2, 2]],
        "num_res_units": 1,
    }  # JSON lists, as in config.json
    assert required_divisor("unet", kw) == (4, 4, 2)
    assert model_kwargs("unet", kw)["strides"] == ((2, 2, 1), (2, 2, 2))
    with torch.no_grad():
        out = get_model("unet", **kw).eval()(torch.randn(1, 1, 12, 8, 6))
    assert out.shape == (1, 2, 12, 8, 6)
    assert required_divisor("dynunet", SMALL["dynunet"]) == (4, 4, 2)
    assert required_divisor("unet2d", SMALL["unet2d"]) == (4, 4, 1)


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model_name 'vnet'.*unet, segresnet, unet3d_scratch"):
        get_model("vnet")
    with pytest.raises(ValueError, match="unknown model_name 'vnet'"):
        required_divisor("vnet")


def test_unet2d_sees_each_axial_slice_alone() -> None:
    """The slice-wise 2D UNet: changing one axial slice changes the output of that slice only."""
    model = get_model("unet2d", **SMALL["unet2d"]).eval()
    x = torch.randn(1, 1, 8, 8, 5)
    y = x.clone()
    y[..., 2] += 1.0
    with torch.no_grad():
        diff = (model(x) - model(y)).abs().amax(dim=(0, 1, 2, 3))
    assert diff[2] > 0 and torch.all(diff[[0, 1, 3, 4]] == 0)
