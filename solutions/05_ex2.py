# Solution to exercise 2 of notebook 05: runs in the notebook's namespace (after its cells).
d = (wide["flip_tta"] - wide["baseline"]).to_numpy()  # paired per-case gains (Dice)
moved = d[np.abs(d) >= 0.0005]  # a change under 0.05 points counts as none
half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
print(
    f"t interval of the mean: {100 * d.mean():+.2f} points [{100 * (d.mean() - half):+.2f}, {100 * (d.mean() + half):+.2f}]"
)
sign = stats.binomtest(int((moved > 0).sum()), len(moved)).pvalue if len(moved) else 1.0
print(f"sign test: {int((moved > 0).sum())} of {len(moved)} changed cases went up, p = {sign:.3f}")
wilcoxon = stats.wilcoxon(moved).pvalue if len(moved) > 1 else 1.0
print(f"Wilcoxon signed-rank: p = {wilcoxon:.3f}")
rng = np.random.default_rng(0)
medians = np.median(rng.choice(d, size=(2000, len(d))), axis=1)
low, high = np.percentile(medians, [2.5, 97.5])
print(
    f"bootstrap 95 % interval of the median: [{100 * low:+.2f}, {100 * high:+.2f}] points (median {100 * np.median(d):+.2f})"
)
# The t interval uses the mean and the sd, and one collapsed case moves both: it can pull the mean below 0 and
# widen the interval even when most cases went up. The sign test counts only directions, so one case is one vote;
# the Wilcoxon test ranks the sizes, so a collapse weighs as the largest rank, not as its full size; the median's
# bootstrap interval ignores a single extreme case. When they disagree with the t interval, look at the case that
# moved most (notebook 04 draws it) before trusting the mean.
