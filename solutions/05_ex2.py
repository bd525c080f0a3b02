# Solution to exercise 2 of notebook 05: runs in the notebook's namespace (after its cells).
wide = per_case.pivot(index="case", columns="arm", values="dice")
d = wide["flip_tta"] - wide["baseline"]
per_fold = per_case.pivot_table(index="fold", columns="arm", values="dice")
f = per_fold["flip_tta"] - per_fold["baseline"]
for unit, g in (("cases", d), ("folds", f)):
    half = stats.t.ppf(0.975, len(g) - 1) * g.std() / np.sqrt(len(g))
    says = "excludes 0" if abs(g.mean()) > half else "includes 0"
    print(f"over {len(g)} {unit}: gain {100 * g.mean():+.2f} points, 95 % interval +- {100 * half:.2f}: {says}")
# The per-case interval is narrower: more units, and t(n - 1) is far smaller for 16 cases than for 2 folds. For an
# inference-only arm it is the fair one: the models are fixed, only the cases vary. For a trained arm it is not: the
# cases of one fold share one model, so one lucky or unlucky training run moves all of them together. Their
# differences are not independent, and the fold (or seed) is the honest unit.
