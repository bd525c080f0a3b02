"""Debugging helpers: gradient norms, activation-memory estimates and measured peak memory.

Introduced in notebook 06. Each helper answers one question a failed run raises: did the gradients blow up
before the loss became NaN (:func:`track_grad_norms`)? How much memory will a patch/batch/channel choice
need (:func:`activation_bytes`, free to compute) and how much did one training step really take
(:func:`measure_peak_memory`, CUDA's allocator peak or the process's resident-set peak on the CPU)?
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIB = 2**20


def track_grad_norms(optimizer: Any) -> tuple[list[float], Any]:
    """Record the total L2 gradient norm before every ``optimizer.step()``, without touching the training loop.

    Introduced in notebook 06. Uses ``Optimizer.register_step_pre_hook`` (the norm of the per-tensor norms, as
    ``clip_grad_norm_`` computes it, on any torch >= 2.4), so ``train.train_one_epoch`` logs norms unchanged.

    Args:
        optimizer: a ``torch.optim.Optimizer`` whose parameters receive gradients.

    Returns:
        ``(norms, handle)``: the list that grows by one float per step, and the hook handle
        (``handle.remove()`` stops recording).
    """
    import torch

    norms: list[float] = []

    def hook(opt: Any, args: Any, kwargs: Any) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0
        )

    return norms, optimizer.register_step_pre_hook(hook)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def measure_peak_memory(
    model: Any,
    roi_size: Sequence[int],
    batch_size: int,
    *,
    device: str = "cpu",
    amp_dtype: Any = None,
    in_channels: int = 1,
) -> dict[str, Any]:
    """Run one forward + backward step on random input and report the memory it really took.

    Introduced in notebook 06. On CUDA: ``torch.cuda.max_memory_allocated`` after a peak reset (tensors only).
    On the CPU (Linux): the rise of the process's resident-set peak (``VmHWM``) after resetting it through
    ``/proc/self/clear_refs``; where that reset is not allowed, the lifetime peak from ``resource.getrusage``
    minus the RSS before the step, which can under-report once an earlier step set a higher peak.

    Args:
        model: the network, already on ``device``.
        roi_size: patch size (x, y, z) in voxels.
        batch_size: patches per batch.
        device: ``"cpu"`` or ``"cuda"``.
        amp_dtype: ``torch.bfloat16``/``torch.float16`` to run the forward pass under autocast, or None.
        in_channels: image channels.

    Returns:
        ``{"peak_mib", "method", "seconds"}``.
    """
    import time

    import torch

    from heartseg_utils.precision import autocast

    dev = torch.device(device)
    x = torch.randn(batch_size, in_channels, *[int(r) for r in roi_size], device=dev)
    model.train()
    model.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        method = "torch.cuda.max_memory_allocated"
    else:
        base = _rss_kib("VmRSS") * 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            method = "VmHWM after /proc/self/clear_refs"
        except OSError:
            method = "ru_maxrss (lifetime peak; may under-report)"
    t0 = time.perf_counter()
    with autocast(dev, amp_dtype):
        out = model(x)
    out.float().mean().backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
    elif method.startswith("VmHWM"):
        peak = _rss_kib("VmHWM") * 1024 - base
    else:
        import resource  # Unix only: imported here so that the module still imports elsewhere

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return {"peak_mib": round(max(peak, 0) / MIB, 1), "method": method, "seconds": round(seconds, 2)}


def diagnose_history(history: Any, *, min_gain: float = 0.05) -> str:
    """Read a run's ``history.csv`` curves and name the pattern: under-fitting, over-fitting or still learning.

    Introduced in notebook 06. The rules (the deep dive's "Low Dice" table): under-fitting when the training
    loss fell by less than ``min_gain`` (relative) and validation Dice stayed low; over-fitting when the
    best validation Dice is at least 3 epochs old while the training loss kept falling after it; still
    learning when the best validation Dice is in the last 3 epochs.

    Args:
        history: a path to ``history.csv`` or a DataFrame with its columns.
        min_gain: smallest relative fall of the training loss that counts as learning.

    Returns:
        One line: the verdict and the numbers behind it.
    """
    import pandas as pd

    h = history if isinstance(history, pd.DataFrame) else pd.read_csv(history)
    if h.empty or not {"epoch", "train_loss", "val_dice"} <= set(h.columns):
        raise ValueError("history needs rows with epoch, train_loss and val_dice (a run's history.csv)")
    loss, dice = h["train_loss"].to_numpy(), h["val_dice"].to_numpy()
    best = int(dice.argmax())
    drop = (loss[0] - loss.min()) / abs(loss[0])
    facts = (
        f"train loss {loss[0]:.3f} -> {loss[-1]:.3f} ({drop:.0%} lower), best val Dice {dice[best]:.3f} at "
        f"epoch {int(h['epoch'].iloc[best])} of {len(h)}"
    )
    if drop < min_gain and dice.max() < 0.5:
        return (
            f"under-fitting: neither curve moves; raise the learning rate, train longer or use a bigger model ({facts})"
        )
    if len(h) - 1 - best >= 3 and loss[-1] < loss[best]:
        return f"over-fitting: validation Dice stopped improving while the training loss kept falling ({facts})"
    if len(h) - 1 - best < 3:
        return f"still learning: validation Dice is still rising; train longer ({facts})"
    return f"plateau: neither curve improves any more; change the recipe, not the length ({facts})"
