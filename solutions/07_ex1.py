# Solution to exercise 1 of notebook 07: runs in the notebook's namespace (after its cells).
true_ml = metrics.volume_ml(truth, saved["spacing_mm"])  # every foreground voxel (all classes of a label map)
for name, flag in (("plain", False), ("tta", True)):
    (r,) = predict.predict(
        run,
        series_dir,
        out / "phantom" / f"mask_from_dicom_{name}.nii.gz",
        tta=flag,
        keep_largest=keep_largest,
        device=device,
        progress=False,
        overwrite=True,
    )
    on_grid = nibabel.processing.resample_from_to(nib.load(r["mask"]), from_nifti, order=0)  # truth's grid
    dice = metrics.evaluate_case(np.asanyarray(on_grid.dataobj), truth, saved["spacing_mm"])["dice"]
    print(f"{name}: {r['volume_ml']:.1f} mL, Dice {dice:.3f}, {r['seconds']} s | truth {true_ml:.1f} mL")
print(
    f"network passes: plain 1, tta {1 + len(inference.TTA_AXES)} (the identity and the flips along axes "
    f"{inference.TTA_AXES}, the in-plane flips training shows)"
)
# Whether TTA moves the volume and the Dice towards the truth is printed; the times vary when other jobs share the
# machine.
