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
