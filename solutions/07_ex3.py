# Solution to exercise 3 of notebook 07: runs in the notebook's namespace (after its cells).
onnx_ml = metrics.volume_ml(p_onnx[0].sum(axis=0) >= 0.5, config["pixdim"])  # any class (binary: the one)
print(
    f"ONNX on the network grid ({config['pixdim']} mm): {onnx_ml:.1f} mL | report on the scan grid: "
    f"{nifti_report['volume_ml']:.1f} mL"
)
# The network's grid is coarser: each voxel is a bigger block, so the boundary is staircased differently.
# The report may also keep only the largest component (the run's decision), may run in bf16 autocast (a bf16 CPU or a
# GPU; its "precision" says), and its mask comes from the
# probability resampled back (bilinear) to the finer scan grid before the 0.5 threshold.
