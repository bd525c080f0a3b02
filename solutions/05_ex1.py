# Solution to exercise 1 of notebook 05: runs in the notebook's namespace (after its cells).
for sd_gain in (table.loc[table["arm"] != "baseline", "gain_sd"].max(), 0.03):
    needed = next((n for n in range(2, 201) if stats.t.ppf(0.975, n - 1) * sd_gain / np.sqrt(n) < 0.02), None)
    print(f"sd of a paired gain {100 * sd_gain:.2f} points -> folds (or fold x seed runs) needed: {needed}")
# The answer grows with the square of sd / gain. Folds are limited by the number of cases, so in practice one
# repeats k-fold cross-validation with several seeds and pools the paired differences.
# The rule puts the interval's edge exactly at a true 2-point gain, so a study of that size excludes 0 only about
# half the time (50 % power); for 80 % power use (t(0.975) + t(0.80)) * sd / sqrt(n) < 0.02. An sd estimated from
# two folds is itself a guess.
for sd_gain in (table.loc[table["arm"] != "baseline", "gain_sd"].max(), 0.03):
    t80 = lambda n: stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.80, n - 1)
    needed = next((n for n in range(2, 201) if t80(n) * sd_gain / np.sqrt(n) < 0.02), None)
    print(f"sd {100 * sd_gain:.2f} points -> runs needed for 80 % power: {needed}")
