"""Model factory: one place that builds every network the series trains.

Introduced in notebook 03. ``config.json`` stores ``model_name`` and ``model_kwargs``; calling
``get_model(name, **kwargs)`` with them rebuilds the exact architecture a checkpoint belongs to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MODEL_NAMES = ("unet", "segresnet", "unet3d_scratch", "unet2d")


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

    def __init__(self, in_channels: int = 1, out_channels: int = 2, features: tuple[int, ...] = (16, 32, 64, 128)) -> None:
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


def get_model(name: str = "unet", *, in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> nn.Module:
    """Build a segmentation network by name.

    Introduced in notebook 03.

    Args:
        name: ``"unet"`` (MONAI UNet, the deep dive's configuration: channels 16-256, strides 2,
            2 residual units, batch norm, dropout 0.2), ``"segresnet"`` (MONAI SegResNet) or
            ``"unet3d_scratch"`` (:class:`UNet3D`) or ``"unet2d"`` (MONAI's UNet in 2D with the
            ``"unet"`` defaults, applied slice by slice: :class:`SliceWise2D`).
        in_channels: input channels.
        out_channels: output channels (2 for softmax over background/atrium, 1 for sigmoid + BCE).
        **kwargs: overrides of the defaults, e.g. ``channels=(8, 16, 32, 64, 128)`` for a smaller UNet.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: for an unknown name.
    """
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet, SegResNet

    if name in ("unet", "unet2d"):
        cfg: dict[str, Any] = dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
                                   norm=Norm.BATCH, dropout=0.2)
        cfg.update(kwargs)
        cfg["channels"], cfg["strides"] = tuple(cfg["channels"]), tuple(cfg["strides"])
        net = UNet(spatial_dims=3 if name == "unet" else 2, in_channels=in_channels, out_channels=out_channels, **cfg)
        return net if name == "unet" else SliceWise2D(net)
    if name == "segresnet":
        cfg = dict(init_filters=16, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2)
        cfg.update(kwargs)
        return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **cfg)
    if name == "unet3d_scratch":
        if "features" in kwargs:
            kwargs["features"] = tuple(kwargs["features"])
        return UNet3D(in_channels=in_channels, out_channels=out_channels, **kwargs)
    raise ValueError(f"unknown model_name {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``. Introduced in notebook 03."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def required_divisor(model_name: str, model_kwargs: dict[str, Any] | None = None) -> int:
    """Return the factor every input side must be divisible by for this architecture.

    Introduced in notebook 03 (roi sizes are checked against it before training starts).
    """
    kw = model_kwargs or {}
    if model_name in ("unet", "unet2d"):
        div = 1
        for s in kw.get("strides", (2, 2, 2, 2)):
            div *= int(s)
        return div
    if model_name == "segresnet":
        return 2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1)
    if model_name == "unet3d_scratch":
        return 2 ** (len(kw.get("features", (16, 32, 64, 128))) - 1)
    raise ValueError(f"unknown model_name {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
