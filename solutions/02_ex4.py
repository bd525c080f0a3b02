# Solution to exercise 4 of notebook 02: runs in the notebook's namespace (after its cells).
train_tf.set_random_state(seed=seed)
fg = [float(p["label"].sum() > 0) for _ in range(10) for p in train_tf(sample)]
print(f"{np.mean(fg):.0%} of {len(fg)} patches contain foreground")
# pos=1, neg=1 centres half of the patches on a foreground voxel (these always contain it). The other half
# are centred on a background voxel, but a patch near the atrium still overlaps it, so the share is > 50 %.
