# Solution to exercise 1 of notebook 03: runs in the notebook's namespace (after its cells).
scores = toys["all background"]
with_bg = DiceCELoss(to_onehot_y=True, softmax=True)(scores, label).item()
without_bg = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(scores, label).item()
print(f"include_background=True: {with_bg:.3f} | include_background=False: {without_bg:.3f}")
# The background channel's Dice is ~1 for almost any prediction, so averaging it in halves the Dice term.
# Without it, "no atrium at all" costs the full 1.0 of the Dice term: easier to read, same best solution.
