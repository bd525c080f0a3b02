# Solution to exercise 1 of notebook 02: runs in the notebook's namespace (after its cells).
for spacing in (target_pixdim, compare_pixdim):
    out = transforms.get_transforms("val", pixdim=spacing)(sample)
    n_vox = int(np.prod(out["image"].shape[1:]))
    print(f"pixdim {tuple(spacing)}: shape {tuple(out['image'].shape[1:])}, {n_vox / 1e6:.2f} M voxels")
pairs = list(zip("xyz", target_pixdim, compare_pixdim))
print(
    "coarser:",
    [a for a, t, c in pairs if c > t],
    "| finer (slices that interpolation invents):",
    [a for a, t, c in pairs if c < t],
)
