"""The network a plan builds from the patch and the spacing, and the memory it needs.

Introduced in notebook 03: nnU-Net's pooling rule (:func:`pooling_strides`), the per-level kernels of thick-slice
data (:func:`level_kernels`) and the planned network (:func:`planned_network`, built by :func:`build_unet` from
the model registry). :func:`activation_bytes`, the activation memory of a forward pass, is introduced in notebook
06; ``plan.gpu_bytes`` uses it for the planner's GPU memory model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from heartseg_utils.models import get_model, stride_product

MIN_SIDE = 3  # the deepest feature map keeps >= 3 voxels per side: one 3x3x3 convolution's reach
MAX_POOLS = 5  # at most 5 downsamplings: 6 resolution levels
CHANNEL_BASE, CHANNEL_CAP = 16, 320  # channels double per level from 16 (notebook 03's UNet), capped as nnU-Net


def pooling_strides(
    patch: Sequence[float], spacing: Sequence[float], *, exact: bool = False, max_pools: int = MAX_POOLS
) -> list[list[int]]:
    """nnU-Net's downsampling rule: per level, stride 2 on each axis that may still be pooled, else 1.

    Introduced in notebook 03. An axis is pooled while its side stays >= ``MIN_SIDE`` voxels after pooling
    and its current spacing is at most twice the finest spacing among the poolable axes, so a 10 mm axis
    is not pooled until the in-plane spacing has caught up.

    Args:
        patch: patch size in voxels (x, y, z).
        spacing: voxel size in mm.
        exact: pool an axis only while its side stays an integer (for a given, fixed patch).
        max_pools: most downsamplings.

    Returns:
        One ``[sx, sy, sz]`` per level (MONAI UNet's ``strides``).
    """
    side, sp, strides = np.array(patch, float), np.array(spacing, float), []
    for _ in range(max_pools):
        ok = side / 2 >= MIN_SIDE
        if exact:
            ok &= side % 2 == 0
        if not ok.any():
            break
        ok &= sp <= 2 * sp[ok].min()
        step = np.where(ok, 2, 1)
        strides.append([int(s) for s in step])
        side, sp = side / step, sp * step
    return strides


def divisor_of(strides: Sequence[Sequence[int] | int]) -> list[int]:
    """Per-axis factor every input side must be divisible by: the product of the strides on that axis."""
    return list(stride_product(strides))


def unet_kwargs(strides: Sequence[Sequence[int]]) -> dict[str, Any]:
    """MONAI UNet keyword arguments for these strides: channels 16, 32, ... (capped at 320), as notebook 03."""
    channels = [min(CHANNEL_BASE * 2**i, CHANNEL_CAP) for i in range(len(strides) + 1)]
    return {
        "channels": channels,
        "strides": [list(s) for s in strides],
        "num_res_units": 2,
        "norm": "batch",
        "dropout": 0.2,
    }


def level_kernels(strides: Sequence[Sequence[int]], spacing: Sequence[float]) -> list[list[int]]:
    """Per resolution level, the convolution kernel nnU-Net gives thick-slice data: 1 along an axis whose voxels
    are more than twice the finest axis's at that level, else 3 (so 3 x 3 x 1 while the slices are thick).

    Introduced in notebook 03. One entry per level (``len(strides) + 1``); a 1 skips the costly and, across 8 mm
    slices, nearly useless convolution along that axis until pooling has brought the in-plane voxels close.
    """
    sp, kernels = np.array(spacing, float), []
    for step in [*strides, None]:
        kernels.append([1 if s > 2 * sp.min() else 3 for s in sp])
        if step is not None:
            sp = sp * np.array(step)
    return kernels


def planned_network(
    strides: Sequence[Sequence[int]], spacing: Sequence[float], thick_slice_network: str = "unet"
) -> tuple[str, dict[str, Any]]:
    """The planned network's registry name and keyword arguments for these strides at this spacing. Notebook 03.

    Near-isotropic data (no level would use a 3 x 3 x 1 kernel, :func:`level_kernels`): MONAI's UNet
    (:func:`unet_kwargs`). Thick-slice data (the slices more than twice the in-plane voxels), by
    ``thick_slice_network``:

    - ``"2d"``: MONAI's UNet with 3 x 3 x 1 kernels on every level and no pooling across slices, a 2D UNet run on
      every slice of the patch, along whichever axis is thick. On the realistic short-axis phantom it beat the 3D
      UNet at every layout tried under a 12-minute CPU budget (docs/benchmarks.md), so timed CPU plans, which
      get at least ``plan.CPU_STEPS`` steps, use it (``plan.THICK_SLICE_NETWORK``); nnU-Net also trains a 2D
      network for such data. With about 100 steps at 3.75 mm in-plane it did worse than the 3D UNet, so the
      untimed reference plan and GPU plans (not measured) keep the 3D UNet.
    - ``"unet"`` (the default): the 3D UNet, whose strides skip the slice axis until the in-plane voxels catch up.
    - ``"dynunet"``: nnU-Net's own network, MONAI's ``DynUNet``, with per-level kernels; it convolves twice at
      full resolution where MONAI's UNet starts with a strided convolution, and its step measured about 4x slower.
    """
    kernels = level_kernels(strides, spacing)
    if thick_slice_network == "unet" or all(k == [3, 3, 3] for k in kernels):
        return "unet", unet_kwargs(strides)
    if thick_slice_network == "2d":
        thick = int(np.argmax(spacing))
        flat = [[1 if a == thick else int(v) for a, v in enumerate(level)] for level in strides]
        kernel = [1 if a == thick else 3 for a in range(3)]
        return "unet", {**unet_kwargs([f for f in flat if 2 in f]), "kernel_size": kernel, "up_kernel_size": kernel}
    filters = [min(CHANNEL_BASE * 2**i, CHANNEL_CAP) for i in range(len(strides) + 1)]
    return "dynunet", {
        "kernel_size": kernels,
        "strides": [[1, 1, 1], *[list(s) for s in strides]],
        "filters": filters,
        "norm_name": "instance",
        "res_block": True,
    }


def build_unet(model_kwargs: Mapping[str, Any], out_channels: int = 2, model_name: str = "unet"):
    """The network a plan describes, from the model registry (``models.get_model``). Notebook 03."""
    return get_model(model_name, out_channels=out_channels, **dict(model_kwargs))


def activation_bytes(
    model: Any, roi_size: Sequence[int], batch_size: int, *, in_channels: int = 1, bytes_per_value: int = 4
) -> int:
    """Estimate the activation memory of one forward pass without allocating it (PyTorch's meta device).

    Introduced in notebook 06; the planner's GPU memory model (``plan.gpu_bytes``) uses it too. Sums the outputs of
    every leaf module (convolutions, norms, activations), which is roughly what autograd keeps for the backward
    pass. Weights, gradients and optimiser state come on top.

    Args:
        model: the network (it is not modified: a copy is moved to the meta device).
        roi_size: patch size (x, y, z) in voxels.
        batch_size: patches per batch.
        in_channels: image channels.
        bytes_per_value: 4 for float32, 2 for bf16/fp16 autocast.

    Returns:
        The estimate in bytes.
    """
    import copy

    import torch

    if batch_size < 1 or len(roi_size) != 3 or any(int(r) < 1 for r in roi_size):
        raise ValueError(f"need batch_size >= 1 and 3 positive roi sides, got {batch_size}, {tuple(roi_size)}")
    meta = copy.deepcopy(model).to("meta")
    total = [0]

    def count(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    handles = [m.register_forward_hook(count) for m in meta.modules() if not list(m.children())]
    try:
        meta.train()
        meta(torch.empty(batch_size, in_channels, *[int(r) for r in roi_size], device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total[0] * bytes_per_value
