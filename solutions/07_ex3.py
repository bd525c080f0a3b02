# Solution to exercise 3 of notebook 07: runs in the notebook's namespace (after its cells).
onnx_ml = metrics.volume_ml(p_onnx[0].sum(axis=0) >= 0.5, config["pixdim"])  # any class (binary: the one)
print(
    f"ONNX on the network grid ({config['pixdim']} mm): {onnx_ml:.1f} mL | report on the scan grid: "
    f"{nifti_report['volume_ml']:.1f} mL"
)
# Why they differ a little:
# - the network's grid is coarser: each voxel is a bigger block, so the boundary is staircased differently;
# - the report's mask comes from the probability resampled back (bilinear) to the finer scan grid before the 0.5
#   threshold;
# - the report follows the run's decisions: it may average flip-TTA passes (postprocessing.json's "tta") where
#   p_onnx is one pass, and keep only the largest component;
# - it may run in bf16 autocast (a bf16 CPU or a GPU; the report's "precision" says), the ONNX file in fp32.
