# Solution to exercise 3 of notebook 08: runs in the notebook's namespace (after its cells).
validation = [s for s in scans if s["kind"] == "clean"]
everything = qc.reliability_curve([s["probability"] for s in validation], [s["label"] for s in validation], n_bins)
ece_all = qc.expected_calibration_error(
    [s["probability"] for s in validation], [s["label"] for s in validation], n_bins
)
lowest = everything["bins"][0]
print(f"every voxel ({everything['n_voxels']:,}, a seeded subset if over a million): ECE {ece_all:.4f}")
print(f"near the masks ({curve['n_voxels']:,} voxels): ECE {ece_raw:.4f}")
print(
    f"share of all voxels with p < {lowest['high']:.1f}: {lowest['count'] / everything['n_voxels']:.3f}, of which "
    f"{lowest['accuracy']:.4f} are foreground"
)
# Almost every voxel of a volume is air or tissue far from the heart, predicted near 0 and truly background: a gap
# of about 0 that counts once per voxel. The ECE is a weighted mean, so those voxels pull it towards 0 whatever
# happens at the boundary. Near the masks the same model shows its real gaps.
