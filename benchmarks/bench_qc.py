"""Per-scan quality control measured on a phantom failure set, for docs/benchmarks.md (issue 23).

  python benchmarks/bench_qc.py --out /tmp/bench_qc                 # train notebook 03's reference run, then measure
  python benchmarks/bench_qc.py --out /tmp/bench_qc --run_dir R     # measure an existing run (it needs qc.json)

The run is trained on the default phantom (20 cases, seed 0; notebook 03's untimed reference plan: 40 epochs,
``time_budget_min 0``), so training writes ``qc.json`` from its own validation cases. The failure set is new
labelled phantoms (``--n_cases`` of them, seed 1, never seen in training): the ordinary cases, a shifted copy of
them per kind of ``heartseg_utils.shifts.SHIFTS`` (MR artefacts, inversion, a crop that misses the heart), and
phantoms of other geometries (``--variants``). Every scan goes through ``predict.predict`` as a user's would (the
run's own TTA / largest-component decisions and its qc.json), and its mask is scored against its label.

Prints markdown: per-kind rows, the AUROC of the quality score for "Dice < 0.5", the risk-coverage curve (mean Dice
of the scans kept), the flag's catch rate and false alarms (scans with Dice >= 0.8 flagged), the best trade-off a
score threshold alone could reach, and the validation ECE before/after temperature scaling; writes ``scans.csv``
and ``summary.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

FAIL, GOOD = 0.5, 0.8  # Dice below FAIL is a failure the flag must catch; Dice >= GOOD a scan it should pass


def build_failure_set(out: Path, n_cases: int, variants: list[str], kinds: list[str], seed: int = 1) -> dict[str, Path]:
    """``{kind: MSD folder}``: the ordinary cases, each shift of them, and each other geometry (reused if there)."""
    from heartseg_utils.shifts import write_shifted
    from heartseg_utils.synthetic import make_synthetic_dataset

    root = out / ("eval" if seed == 1 else f"eval_seed{seed}")
    folders = {"ordinary": make_synthetic_dataset(root / "ordinary", n_train=n_cases, n_test=0, seed=seed)}
    for kind in kinds:
        dst = root / kind
        folders[kind] = dst if (dst / "dataset.json").is_file() else write_shifted(folders["ordinary"], dst, kind, seed)
    for variant in variants:
        dst = root / f"variant_{variant}"
        folders[f"variant_{variant}"] = make_synthetic_dataset(
            dst, n_train=n_cases, n_test=0, seed=seed, variant=variant
        )
    return folders


def score_scans(run_dir: Path, folders: dict[str, Path], out: Path) -> list[dict]:
    """Predict every labelled scan of every folder with ``predict.predict``; one row per scan with its true Dice."""
    import nibabel as nib

    from heartseg_utils import data, metrics, predict

    rows = []
    for kind, folder in folders.items():
        items = {i["case"]: i for i in data.load_datalist(folder, "training")}
        t0 = time.perf_counter()
        reports = predict.predict(run_dir, folder / "imagesTr", out / kind, progress=False, overwrite=True)
        seconds = (time.perf_counter() - t0) / max(len(reports), 1)
        for report in reports:
            case = Path(report["mask"]).name.removesuffix(".nii.gz")
            mask = np.asarray(nib.load(report["mask"]).dataobj)
            label = np.asarray(nib.load(items[case]["label"]).dataobj) != 0
            rows.append(
                {
                    "kind": kind,
                    "case": case,
                    "dice": metrics.dice(mask, label),
                    "quality_score": report["quality_score"],
                    "needs_review": bool(report["needs_review"]),
                    "reasons": " | ".join(report["review_reasons"]),
                    "seconds_per_scan": round(seconds, 2),
                }
            )
    return rows


def summarise(rows: list[dict], record: dict) -> dict:
    """AUROC, risk-coverage, the flag's catch rate and false alarms, the best score-only trade-off, calibration."""
    from heartseg_utils import qc

    dice = np.array([r["dice"] for r in rows])
    flagged = np.array([r["needs_review"] for r in rows])
    have_score = all(r["quality_score"] is not None for r in rows)
    score = np.array([r["quality_score"] if have_score else 0.0 for r in rows], dtype=np.float64)
    failed, good = dice < FAIL, dice >= GOOD
    out = {"n_scans": len(rows), "n_failed": int(failed.sum()), "n_good": int(good.sum())}
    out["flag_caught"] = int((flagged & failed).sum())
    out["flag_false_alarms"] = int((flagged & good).sum())
    out["flag_false_alarm_rate"] = float(flagged[good].mean()) if good.any() else None
    out["flagged_total"] = int(flagged.sum())
    if have_score:
        out["auroc_score"] = qc.auroc(score, failed)
        curve = qc.risk_coverage(score, dice)
        out["risk_coverage"] = {k: curve[k] for k in ("area", "oracle_area", "overall_mean_dice")}
        out["coverage_table"] = {
            f"{c:.0%}": curve["mean_dice"][max(int(round(c * len(rows))) - 1, 0)] for c in (0.25, 0.5, 0.75, 0.9, 1.0)
        }
        # the lowest threshold that catches every failure by the score alone, and what it costs in false alarms
        limit = float(np.nextafter(score[failed].max(), np.inf)) if failed.any() else float(score.min())
        out["score_only_catch_all"] = {"threshold": limit, "false_alarm_rate": float((score[good] < limit).mean())}
    out["validation_calibration"] = {
        k: record["temperature"][k] for k in ("fitted", "value", "ece_before", "ece_after")
    }
    out["validation_threshold"] = None if record["threshold"] is None else record["threshold"]["threshold"]
    return out


def markdown(rows: list[dict], summary: dict, head: dict) -> str:
    """The report for docs/benchmarks.md."""
    lines = [f"{k}: {v}" for k, v in head.items()] + ["", "| set | scans | mean Dice | Dice < 0.5 | flagged |"]
    lines.append("|---|---|---|---|---|")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        group = [r for r in rows if r["kind"] == kind]
        d = np.array([r["dice"] for r in group])
        flag = sum(r["needs_review"] for r in group)
        lines.append(f"| {kind} | {len(group)} | {d.mean():.3f} | {int((d < FAIL).sum())} | {flag} |")
    lines += ["", "```json", json.dumps(summary, indent=1), "```"]
    return "\n".join(lines)


def train_reference_run(out: Path, epochs: int) -> Path:
    """Notebook 03's untimed reference plan on the default phantom (seed 0), written to ``out/run``."""
    from heartseg_utils.synthetic import make_synthetic_dataset
    from heartseg_utils.train import run_training

    msd = make_synthetic_dataset(out / "train" / "Task02_Heart", seed=0)
    cfg = {"data_dir": str(msd), "run_dir": str(out / "run"), "max_epochs": epochs, "time_budget_min": 0}
    run_training({**cfg, "progress": False, "seed": 0, "overwrite": True})
    return out / "run"


def main() -> None:
    from heartseg_utils import runs
    from heartseg_utils.shifts import SHIFTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="working folder (data, run, predictions, scans.csv)")
    parser.add_argument("--run_dir", default="", help="measure this run instead of training one")
    parser.add_argument("--max_epochs", type=int, default=40)
    parser.add_argument("--n_cases", type=int, default=10, help="labelled phantoms per set")
    parser.add_argument("--variants", default="short_axis,thick_slice")
    parser.add_argument("--kinds", default="all", help='"all" or comma-separated keys of shifts.SHIFTS')
    parser.add_argument("--eval_seed", type=int, default=1, help="seed of the failure set's phantoms (training: 0)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    load0, t0 = os.getloadavg(), time.perf_counter()
    run_dir = Path(args.run_dir) if args.run_dir else train_reference_run(out, args.max_epochs)
    t_train = time.perf_counter() - t0
    record = runs.read_qc(run_dir)
    if record is None:
        raise SystemExit(f"{run_dir} has no qc.json: train it with this branch's heartseg_utils")
    kinds = list(SHIFTS) if args.kinds == "all" else args.kinds.split(",")
    folders = build_failure_set(out, args.n_cases, [v for v in args.variants.split(",") if v], kinds, args.eval_seed)
    tag = "" if args.eval_seed == 1 else f"_seed{args.eval_seed}"
    rows = score_scans(run_dir, folders, out / f"pred{tag}")
    with open(out / f"scans{tag}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, record)
    (out / f"summary{tag}.json").write_text(json.dumps(summary, indent=1))
    post = runs.read_json(run_dir / runs.POSTPROCESSING)
    head = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load average before/after": f"{load0[0]:.1f} / {os.getloadavg()[0]:.1f}",
        "failure set seed": args.eval_seed,
        "training + qc.json (s)": round(t_train, 1),
        "total (s)": round(time.perf_counter() - t0, 1),
        "run decisions": {k: post.get(k) for k in ("tta", "val_dice_no_tta", "val_dice_tta", "keep_largest")},
        "qc.json": record["note"],
    }
    print(markdown(rows, summary, head))


if __name__ == "__main__":
    main()
