"""Device and numeric precision: where a run computes, and whether it autocasts to bf16/fp16.

Introduced in notebook 03. One decision, :func:`amp_decision`, serves training, inference, the planner and
notebook 06: CUDA autocasts (bf16, or fp16 with a gradient scaler); a CPU autocasts to bf16 only where it has
native bf16 instructions and a timed probe of the real workload says bf16 is faster. ``HEARTSEG_NO_BF16=1``
makes any CPU answer as one without native bf16, so tests and CI can run that branch on any machine.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("auto", "on", "off")
NO_BF16_ENV = "HEARTSEG_NO_BF16"  # set to 1: behave as a CPU without native bf16 (tests, CI, "as a laptop would")
_PROBED: dict[tuple, tuple[float, float]] = {}  # probe results of this process, keyed by network and input shape


def resolve_device(device: str = "auto") -> torch.device:
    """Map "auto" to CUDA when available, else CPU; asking for "cuda" without one is an error. Notebook 03."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def cpu_bf16_flags() -> str:
    """The CPU's native bf16 instruction flags from /proc/cpuinfo (``avx512_bf16``, ``amx_bf16``); "" if none.

    ``HEARTSEG_NO_BF16=1`` in the environment makes it answer "" on any CPU, so the whole series and the tests run
    the fp32 branch as most laptops do (``.ci/run`` runs the precision tests both ways).
    """
    if os.environ.get(NO_BF16_ENV, "").strip() not in ("", "0"):
        return ""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux
        return ""
    return " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in words)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a disabled one for None (fp32). Notebook 03."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _probe_block(channels: int = 16) -> torch.nn.Module:
    """A small UNet-like block (conv, batch norm, PReLU, strided and transposed conv): the probe's default network."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv3d(1, channels, 3, padding=1), nn.BatchNorm3d(channels), nn.PReLU(),
        nn.Conv3d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm3d(channels), nn.PReLU(),
        nn.ConvTranspose3d(channels, channels, 3, stride=2, padding=1, output_padding=1), nn.Conv3d(channels, 2, 1),
    )  # fmt: skip


def probe_cpu_bf16(
    model: torch.nn.Module | None = None,
    shape: Sequence[int] = (2, 1, 32, 32, 32),
    *,
    train_step: bool = True,
    repeats: int = 2,
) -> tuple[float, float]:
    """Best seconds of one step of ``model`` on a random ``shape`` input, in fp32 and in bf16 autocast.

    Introduced in notebook 03. Training asks with its own network and batch shape (forward + backward), inference
    with its network and sliding-window batch (forward only): a lone convolution or a toy block can rank the two
    precisions differently from the real workload. The model is copied, so its weights and batch-norm statistics
    stay untouched; fp32 and bf16 alternate, so a load change hits both; round 0 only warms up. The random state is
    left alone, and each (network, shape, step) is measured once per process.
    """
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()) if model else 0, tuple(shape), train_step)
    if key not in _PROBED:
        best = _best_seconds(model, shape, (None, torch.bfloat16), train_step, repeats)
        _PROBED[key] = best[None], best[torch.bfloat16]
    return _PROBED[key]


def _best_seconds(
    model: torch.nn.Module | None, shape: Sequence[int], dtypes: tuple, train_step: bool, repeats: int
) -> dict[torch.dtype | None, float]:
    """Best seconds per autocast dtype (None = fp32) of one step on a copy of ``model``; round 0 only warms up."""
    best = dict.fromkeys(dtypes, math.inf)
    with torch.random.fork_rng(devices=[]):
        net = (_probe_block() if model is None else copy.deepcopy(model)).cpu().train(train_step)
        x = torch.randn(*shape)
        for i in range(repeats + 1):
            for dtype in best:  # the dtypes alternate, so a change of load hits all of them
                t0 = time.perf_counter()
                with torch.set_grad_enabled(train_step), autocast(torch.device("cpu"), dtype):
                    out = net(x)
                if train_step:
                    out.float().mean().backward()
                if i:
                    best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best


def train_step_seconds(
    model: torch.nn.Module, shape: Sequence[int], *, fp32_only: bool = False, repeats: int = 2
) -> tuple[float, str]:
    """Seconds of one training step (forward + backward) of ``model`` on the CPU, in the precision amp "auto" picks.

    Introduced in notebook 03: the planner times its candidate networks with it. On a CPU with native bf16 this is
    :func:`probe_cpu_bf16` (so training's own precision decision reuses the measurement) and the faster of the two;
    elsewhere (or with ``fp32_only``, for amp "off") only fp32 is timed: bf16 there is many times slower and would
    never be chosen. Each (network, shape) is measured once per process, so planning twice gives the same plan.

    Returns:
        ``(seconds, "bfloat16" or "off")``.
    """
    if cpu_bf16_flags() and not fp32_only:
        fp32_s, bf16_s = probe_cpu_bf16(model, shape, train_step=True, repeats=repeats)
        return (bf16_s, "bfloat16") if bf16_s < fp32_s else (fp32_s, "off")
    key = ("fp32", type(model).__name__, sum(p.numel() for p in model.parameters()), tuple(shape))
    if key not in _PROBED:  # measured once per process, as probe_cpu_bf16: a notebook's plan and its run agree
        _PROBED[key] = _best_seconds(model, shape, (None,), True, repeats)[None], math.inf
    return _PROBED[key][0], "off"


def _recorded_cpu_precision(recorded: dict[str, Any] | None, flags: str) -> tuple[torch.dtype | None, str] | None:
    """The precision a run recorded on a CPU (``{"device", "amp"}`` of its metrics.json), if this CPU can follow it."""
    if not recorded or not str(recorded.get("device")).startswith("cpu"):
        return None
    if recorded.get("amp") == "off":
        return None, "the run was trained in fp32 on a CPU: fp32, as trained"
    if recorded.get("amp") == "bfloat16" and flags:
        return torch.bfloat16, f"the run was trained in bf16 on a CPU with {flags}: bf16 autocast, as trained"
    return None  # trained in bf16 elsewhere: this CPU decides for itself


def amp_decision(
    amp: str,
    device: torch.device,
    model: torch.nn.Module | None = None,
    shape: Sequence[int] | None = None,
    *,
    train_step: bool = True,
    recorded: dict[str, Any] | None = None,
) -> tuple[torch.dtype | None, str]:
    """Decide the autocast dtype (None = fp32) and say why: the one precision rule of the package. Notebook 03.

    CUDA: bf16, or fp16 (with a gradient scaler) where the GPU has no bf16. CPU: ``"on"`` = bf16 (with a
    ``RuntimeWarning`` where the CPU has no native bf16, as most laptops: bf16 runs many times slower there);
    ``"auto"`` = bf16 only where the CPU has native bf16 instructions and :func:`probe_cpu_bf16` measures
    ``model`` on ``shape`` faster in bf16 (without them bf16 3D convolutions run many times slower). The probe is
    timed, so two processes can decide differently: set ``amp`` explicitly where runs must match bit for bit.
    Inference passes the precision its run recorded (``recorded``): on a CPU that can follow it, it does, so the
    same scan gives the same mask every time.

    Args:
        amp: ``"auto"``, ``"on"`` or ``"off"``.
        device: where the run computes.
        model, shape: the network and input batch shape to probe (default: a small block on 2 x 32^3).
        train_step: probe forward + backward (training) or forward only (inference).
        recorded: ``{"device", "amp"}`` from the run's metrics.json (inference only).

    Returns:
        ``(dtype or None, reason)``; both are recorded in metrics.json (``amp``, ``amp_reason``).
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown amp {amp!r}; choose one of {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None, "amp='off': fp32"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"amp={amp!r} on CUDA: bf16 autocast"
        return torch.float16, f"amp={amp!r} on CUDA without bf16: fp16 autocast with a gradient scaler"
    flags = cpu_bf16_flags()
    if amp == "on":
        return _cpu_amp_on(flags)
    followed = _recorded_cpu_precision(recorded, flags)
    if followed is not None:
        return followed
    if not flags:
        return None, "amp='auto' on a CPU without native bf16 (no avx512_bf16/amx_bf16): fp32"
    shape = tuple(shape or (2, 1, 32, 32, 32))
    fp32_s, bf16_s = probe_cpu_bf16(model, shape, train_step=train_step)
    what = f"{'training step' if train_step else 'forward pass'} on {shape}"
    verdict = f"probe {what}: bf16 {bf16_s * 1e3:.0f} ms vs fp32 {fp32_s * 1e3:.0f} ms"
    if bf16_s < fp32_s:
        return torch.bfloat16, f"amp='auto' on a CPU with {flags}: {verdict}: bf16 autocast"
    return None, f"amp='auto' on a CPU with {flags}: {verdict}: fp32"


def _cpu_amp_on(flags: str) -> tuple[torch.dtype, str]:
    """``amp="on"`` on a CPU: bf16 autocast as asked, with a warning where the CPU has no native bf16 instructions."""
    if flags:
        return torch.bfloat16, f"amp='on' on a CPU with {flags}: bf16 autocast"
    reason = "amp='on' on a CPU without native bf16 (no avx512_bf16/amx_bf16): bf16 autocast, as asked"
    warnings.warn(
        f"{reason}; bf16 is emulated there and usually many times slower than fp32: use amp='auto' or 'off'",
        RuntimeWarning,
        stacklevel=3,
    )
    return torch.bfloat16, reason


def dtype_name(dtype: torch.dtype | None) -> str:
    """How metrics.json and reports name a precision: ``"bfloat16"``, ``"float16"`` or ``"off"`` (fp32)."""
    return str(dtype).replace("torch.", "") if dtype is not None else "off"
