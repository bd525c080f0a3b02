# Solution to exercise 4 of notebook 03: runs in the notebook's namespace (after its cells).
h = pd.read_csv(run / "history.csv")
h["elapsed_s"] = h["epoch_seconds"].cumsum()
for target in (0.5, 0.8):
    reached = h[h["val_dice"] >= target]
    if reached.empty:
        print(f"Dice {target}: not reached in {len(h)} epochs")
    else:
        row = reached.iloc[0]
        print(f"Dice {target}: epoch {row['epoch']:.0f} after {row['elapsed_s']:.0f} s")
within = h[h["elapsed_s"] <= 120]
if within.empty:
    print("not one epoch finished within 120 s")
else:
    print(
        f"after 120 s: {len(within)} epochs, best Dice so far {within['val_dice'].max():.3f} "
        f"(the whole run: {h['val_dice'].max():.3f} after {h['elapsed_s'].iloc[-1]:.0f} s)"
    )
# A 2-minute budget is not this run cut short: the planner sizes the layout for the budget (coarser voxels or a
# smaller patch, so that enough optimiser steps fit), and the poly schedule decays over the shorter run. The
# Dice above is an upper bound on neither; exercise 5 shows the plan a 2-minute budget gets.
