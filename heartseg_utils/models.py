"""Model factory: one place that builds every network the series trains.

Introduced in notebook 03. ``config.json`` stores ``model_name`` and ``model_kwargs``; calling
``get_model(name, **kwargs)`` with them rebuilds the exact architecture a checkpoint belongs to. Every network
family is one entry of :data:`MODELS` (builder, default kwargs, divisor); ``MODEL_NAMES`` derives from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn


class DoubleConv(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by batch norm and ReLU (the classic UNet block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet3D(nn.Module):
    """A from-scratch 3D UNet: DoubleConv encoder, max-pool down, transposed-conv up, skip concatenation.

    Written out by hand for teaching (notebook 03 compares it with MONAI's UNet). Input sizes must be
    divisible by ``2 ** (len(features) - 1)``.

    Args:
        in_channels: image channels (1 for MRI).
        out_channels: classes (2 = background + left atrium, for softmax).
        features: channels per level, the last one is the bottleneck.
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, features: tuple[int, ...] = (16, 32, 64, 128)
    ) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        ch = in_channels
        for f in features[:-1]:
            self.down.append(DoubleConv(ch, f))
            ch = f
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = DoubleConv(ch, features[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        ch = features[-1]
        for f in reversed(features[:-1]):
            self.up.append(nn.ConvTranspose3d(ch, f, kernel_size=2, stride=2))
            self.dec.append(DoubleConv(2 * f, f))
            ch = f
        self.head = nn.Conv3d(ch, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class SliceWise2D(nn.Module):
    """Run a 2D network on every axial slice of a 3D input: (N, C, X, Y, Z) -> N*Z slices -> (N, C', X, Y, Z).

    Introduced in notebook 05, to compare a slice-wise 2D UNet with the 3D one in the same 3D pipeline.
    """

    def __init__(self, net2d: nn.Module) -> None:
        super().__init__()
        self.net2d = net2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, sx, sy, sz = x.shape
        out = self.net2d(x.permute(0, 4, 1, 2, 3).reshape(n * sz, c, sx, sy))
        return out.reshape(n, sz, -1, sx, sy).permute(0, 2, 3, 4, 1)


def _tuples(value: Any) -> Any:
    """JSON lists (from config.json) back to tuples, nested ones too: ``[[2, 2, 1], 2]`` -> ``((2, 2, 1), 2)``."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def stride_product(strides: Any, spatial_dims: int = 3) -> tuple[int, ...]:
    """Per-axis product of a stride list whose entries are ints (all axes) or per-axis sequences."""
    div = [1] * spatial_dims
    for s in strides:
        per_axis = s if isinstance(s, (list, tuple)) else [s] * spatial_dims
        div = [d * int(p) for d, p in zip(div, per_axis)]
    return tuple(div)


def _build_unet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)


def _build_unet2d(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    from monai.networks.nets import UNet

    return SliceWise2D(UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kw))


def _build_segresnet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)


def _build_dynunet(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    from monai.networks.nets import DynUNet

    kw.setdefault("upsample_kernel_size", kw["strides"][1:])
    return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)


class ModelSpec(NamedTuple):
    """One entry of :data:`MODELS`: how to build a network, its defaults, and what its input sides must divide by."""

    build: Callable[..., nn.Module]
    defaults: dict[str, Any]
    divisor: Callable[[dict[str, Any]], tuple[int, int, int]]  # merged kwargs -> per-axis (x, y, z) divisor


_UNET = {
    "channels": (16, 32, 64, 128, 256),
    "strides": (2, 2, 2, 2),
    "num_res_units": 2,
    "norm": "batch",
    "dropout": 0.2,
}
_DYN_STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))

# name -> builder, default kwargs, divisor: the one place a network family is named (adding one = one entry)
MODELS: dict[str, ModelSpec] = {
    "unet": ModelSpec(_build_unet, _UNET, lambda kw: stride_product(kw["strides"])),
    "segresnet": ModelSpec(
        _build_segresnet,
        {"init_filters": 16, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "dropout_prob": 0.2},
        lambda kw: (2 ** (len(kw["blocks_down"]) - 1),) * 3,
    ),
    "unet3d_scratch": ModelSpec(
        UNet3D, {"features": (16, 32, 64, 128)}, lambda kw: (2 ** (len(kw["features"]) - 1),) * 3
    ),
    "unet2d": ModelSpec(_build_unet2d, _UNET, lambda kw: (*stride_product(kw["strides"], 2), 1)),
    "dynunet": ModelSpec(
        _build_dynunet,
        {
            "kernel_size": ((3, 3, 3),) * 5,
            "strides": _DYN_STRIDES,
            "filters": (16, 32, 64, 128, 256),
            "norm_name": "instance",
            "res_block": False,
        },
        lambda kw: stride_product(kw["strides"]),
    ),
}
MODEL_NAMES = tuple(MODELS)


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model_name {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def model_kwargs(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registry's defaults for ``name`` updated with ``overrides`` (lists from JSON become tuples).

    Introduced in notebook 03.

    Args:
        name: a key of :data:`MODELS`.
        overrides: e.g. ``{"channels": [8, 16, 32], "strides": [[2, 2, 1], 2]}`` from ``config.json``.

    Returns:
        The complete keyword arguments the builder receives.
    """
    return {k: _tuples(v) for k, v in {**_spec(name).defaults, **(overrides or {})}.items()}


def get_model(name: str = "unet", *, in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> nn.Module:
    """Build a segmentation network by name from the :data:`MODELS` registry.

    Introduced in notebook 03.

    Args:
        name: ``"unet"`` (MONAI UNet, the deep dive's configuration: channels 16-256, strides 2, 2 residual
            units, batch norm, dropout 0.2), ``"segresnet"`` (MONAI SegResNet), ``"unet3d_scratch"``
            (:class:`UNet3D`), ``"unet2d"`` (MONAI's UNet in 2D with the ``"unet"`` defaults, applied slice by
            slice: :class:`SliceWise2D`) or ``"dynunet"`` (MONAI DynUNet, nnU-Net's network, for planned runs).
        in_channels: input channels.
        out_channels: output channels (2 for softmax over background/atrium, 1 for sigmoid + BCE).
        **kwargs: overrides of the defaults, e.g. ``channels=(8, 16, 32, 64, 128)`` for a smaller UNet, or
            per-axis ``strides=((2, 2, 1), (2, 2, 2))`` for thick slices (no pooling along z at first).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: for an unknown name.
    """
    return _spec(name).build(in_channels, out_channels, **model_kwargs(name, kwargs))


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``. Introduced in notebook 03."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def required_divisor(model_name: str, model_kwargs_: dict[str, Any] | None = None) -> tuple[int, int, int]:
    """Return the per-axis factors ``(x, y, z)`` every input side must be divisible by for this architecture.

    Introduced in notebook 03 (roi sizes are checked against it before training starts, and the
    transforms pad volumes to it). Per-axis strides give per-axis divisors: strides ``((2, 2, 1), (2, 2, 2))``
    need ``(4, 4, 2)``.

    Args:
        model_name: a key of :data:`MODELS`.
        model_kwargs_: the run's ``model_kwargs`` (overrides of the registry's defaults).

    Returns:
        Three positive ints.
    """
    return tuple(int(d) for d in _spec(model_name).divisor(model_kwargs(model_name, model_kwargs_)))  # type: ignore[return-value]


def logits_to_mask(logits: torch.Tensor) -> torch.Tensor:
    """Turn network output (N, C, ...) into a (N, 1, ...) foreground mask: argmax, or logit > 0 for C = 1.

    Introduced in notebook 03.
    """
    if logits.shape[1] == 1:
        return (logits > 0).to(torch.uint8)
    return logits.argmax(dim=1, keepdim=True).to(torch.uint8)


def logits_to_probability(logits: torch.Tensor) -> torch.Tensor:
    """Network output (N, C, ...) as (N, C - 1, ...) class probabilities without background; sigmoid for C = 1.

    Introduced in notebook 04 (inference averages probabilities for TTA; notebook 07's export check uses it too).
    With two channels (background, atrium) this is the (N, 1, ...) foreground probability, softmax channel 1; a
    multi-class network gives one channel per foreground class (background = 1 - their sum).
    """
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)[:, 1:]


def probability_to_classes(probability: Any) -> Any:
    """Class probabilities without background (C - 1, ...) -> class index map (...): 0 where background wins.

    Introduced in notebook 04. The argmax over (background = 1 - sum, class 1, ..., class K): for one channel this is
    the 0.5 threshold. numpy or torch in, the same out (uint8).
    """
    import numpy as np

    if isinstance(probability, torch.Tensor):
        full = torch.cat([1 - probability.sum(dim=0, keepdim=True), probability])
        return full.argmax(dim=0).to(torch.uint8)
    p = np.asarray(probability, dtype=np.float32)
    return np.concatenate([1 - p.sum(axis=0, keepdims=True), p]).argmax(axis=0).astype(np.uint8)
