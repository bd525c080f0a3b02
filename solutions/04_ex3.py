# Solution to exercise 3 of notebook 04: runs in the notebook's namespace (after its cells).
f = 0.0039  # all-foreground: precision = TP / all voxels = foreground fraction
print(f"Dice 2f/(1+f) = {2 * f / (1 + f):.4f} (reported 0.0077) | IoU f = {f:.4f} (reported 0.0039)")
voxel_ml = np.prod(spacing) / 1000
print(
    f"all-foreground volume for {case}: {truth_c.size * voxel_ml:.0f} mL vs the true {truth_c.sum() * voxel_ml:.1f} mL"
)
