# Solution to exercise 2 of notebook 05: runs in the notebook's namespace (after its cells).
wide = per_case.pivot(index="case", columns="arm", values="dice")
if "flip_tta" in wide:
    d = wide["flip_tta"] - wide["baseline"]
    half = stats.t.ppf(0.975, len(d) - 1) * d.std() / np.sqrt(len(d))
    print(f"per-case gain {100 * d.mean():+.2f} points, 95 % interval +- {100 * half:.2f} ({len(d)} cases)")
    row = table.set_index("arm").loc["flip_tta"]
    print(f"fold-based: 95 % interval +- {100 * (row.gain_ci_high - row.gain_mean):.2f} ({n_folds} folds)")
# Many more units (cases instead of folds) make the interval narrower. For an inference-only arm that is fair: the
# models are fixed and only the cases vary. For a trained arm it is not: the cases of one fold share one model,
# so one lucky or unlucky training run moves all of them together. Their differences are not independent, and the
# fold (or seed) is the honest unit.
