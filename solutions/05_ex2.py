# Solution to exercise 2 of notebook 05: runs in the notebook's namespace (after its cells).
wide = per_case.pivot(index="case", columns="arm", values="dice")
d = wide["flip_tta"] - wide["baseline"]
per_fold = per_case.pivot_table(index="fold", columns="arm", values="dice")
f = per_fold["flip_tta"] - per_fold["baseline"]
halves = {}
for unit, g in (("cases", d), ("folds", f)):
    halves[unit] = stats.t.ppf(0.975, len(g) - 1) * g.std() / np.sqrt(len(g))
    says = "excludes 0" if abs(g.mean()) > halves[unit] else "includes 0"
    print(f"over {len(g)} {unit}: gain {100 * g.mean():+.2f} points, 95 % interval +- {100 * halves[unit]:.2f}: {says}")
print(f"narrower here: the interval over the {min(halves, key=halves.get)}")
# More units and a smaller t (t(15) = 2.1 against t(1) = 12.7) usually make the per-case interval narrower, but two
# fold means that happen to agree closely can give a narrow fold interval too: with n = 2 its sd is a guess. For an
# inference-only arm the case is the fair unit: the models are fixed, only the cases vary. For a trained arm it is
# not: the cases of one fold share one model, so one lucky or unlucky training run moves all of them together.
# Their differences are not independent, and the fold (or seed) is the honest unit.
