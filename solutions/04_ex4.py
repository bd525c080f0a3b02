# Solution to exercise 4 of notebook 04: runs in the notebook's namespace (after its cells).
if len(shown) < 2:
    print("set cases_to_show >= 2 and rerun")
else:

    def dice_at(c, t):
        p, tr = results[c]["probability"] >= t, np.asanyarray(nib.load(by_case[c]["label"]).dataobj) > 0
        return 2 * (p & tr).sum() / max(p.sum() + tr.sum(), 1)

    for a, b in ((shown[0], shown[1]), (shown[1], shown[0])):
        best_t = max(thresholds, key=lambda t: dice_at(a, t))
        print(
            f"tuned on {a}: threshold {best_t} (Dice {dice_at(a, best_t):.3f} vs {dice_at(a, 0.5):.3f} at 0.5); "
            f"on {b}: {dice_at(b, best_t):.3f} vs {dice_at(b, 0.5):.3f} at 0.5"
        )
# Where the network's probabilities are sharp (section 7.1), the best threshold moves Dice little and transfers better
# than notebook 01's raw intensity threshold did. Still, a threshold tuned on the cases you report is one more
# fitted parameter: tune it on validation data and report on data it has never seen (a test set, or another fold).
