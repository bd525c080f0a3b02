# Solution to exercise 1 of notebook 05: runs in the notebook's namespace (after its cells).
for sd_gain in (table.loc[table["arm"] != "baseline", "gain_sd"].max(), 0.03):
    needed = next((n for n in range(2, 201) if stats.t.ppf(0.975, n - 1) * sd_gain / np.sqrt(n) < 0.02), None)
    print(f"sd of a paired gain {100 * sd_gain:.2f} points -> folds (or fold x seed runs) needed: {needed}")
# The answer grows with the square of sd / gain. Folds are limited by the number of cases, so in practice one
# repeats k-fold cross-validation with several seeds and pools the paired differences.
