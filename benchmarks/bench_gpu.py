"""GPU figures for docs/benchmarks.md: AMP vs fp32 step time and peak memory, and epoch time of run_training().

Run on a CUDA machine: python benchmarks/bench_gpu.py --out gpu.json
Prints a markdown table; the device name is part of the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from heartseg_utils import train as T
from heartseg_utils.models import get_model
from heartseg_utils.precision import autocast
from heartseg_utils.recipe import make_loss
from heartseg_utils.synthetic import make_synthetic_dataset


def step_time(dtype: torch.dtype | None, roi: int, batch: int, steps: int = 20, warmup: int = 5) -> dict:
    """Median seconds per optimizer step and peak GPU memory for the default UNet at one precision."""
    torch.backends.cudnn.benchmark = True
    model = get_model("unet").cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = make_loss("dicece")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(batch, 1, roi, roi, roi, device="cuda")
    y = (torch.rand(batch, 1, roi, roi, roi, device="cuda") > 0.99).float()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(torch.device("cuda"), dtype):
            out = model(x)
        loss = loss_fn(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {
        "step_ms": round(1000 * statistics.median(times), 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def epoch_time(data_dir: Path, run_dir: Path, amp: str, bf16: bool = True, epochs: int = 3) -> dict:
    """Run run_training() for a few epochs at full phantom resolution; report median epoch seconds and best Dice."""
    cfg = dict(
        data_dir=str(data_dir),
        run_dir=str(run_dir),
        max_epochs=epochs,
        pixdim="auto",
        roi_size=[96, 96, 96],
        num_samples=4,
        batch_size=2,
        amp=amp,
        progress=False,
        lr=1e-3,
    )
    with mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16):
        metrics = T.run_training(cfg)
    hist = (run_dir / "history.csv").read_text().splitlines()[1:]
    secs = [float(r.split(",")[4]) for r in hist]
    losses = [float(r.split(",")[1]) for r in hist]
    return {
        "amp": metrics["amp"],
        "epoch_s_median": round(statistics.median(secs[1:] or secs), 2),
        "first_epoch_s": round(secs[0], 2),
        "final_loss": round(losses[-1], 4),
        "best_val_dice": metrics["best_val_dice"],
        "all_losses_finite": all(map(lambda v: v == v, losses)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu.json")
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": {}, "epochs": {}}
    for roi, batch in ((96, 2), (128, 2)):
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            result["steps"][f"{name}_roi{roi}_b{batch}"] = step_time(dtype, roi, batch)
            torch.cuda.empty_cache()
    tmp = Path(tempfile.mkdtemp())
    data = make_synthetic_dataset(tmp / "Task02_Heart_synthetic")
    for label, amp, bf16 in (("fp32", "off", True), ("bf16", "auto", True), ("fp16", "auto", False)):
        result["epochs"][label] = epoch_time(data, tmp / f"run_{label}", amp, bf16)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
