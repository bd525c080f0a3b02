# Solution to exercise 2 of notebook 07: runs in the notebook's namespace (after its cells).
broken_dir = out / "phantom" / "dicom_missing_slice"
shutil.rmtree(broken_dir, ignore_errors=True)
shutil.copytree(series_dir, broken_dir)
by_z = sorted(broken_dir.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
gap = len(by_z) // 2
by_z[gap].unlink()
try:
    dicom.read_series(broken_dir)
except dicom.DicomSeriesError as err:
    print("refused:", err)
# A reader that stacks the files without checking the gaps holds the truth minus that slice, every slice above it
# moved down by one slice thickness (the series is written on the RAS grid: slice k is array index k along z).
truth_img = nib.as_closest_canonical(nib.load(out / "phantom" / "truth.nii.gz"))
truth_ras, zooms = np.asanyarray(truth_img.dataobj) > 0, truth_img.header.get_zooms()[:3]
stacked = np.delete(truth_ras, gap, axis=2)
print(
    f"true atrium {metrics.volume_ml(truth_ras, zooms):.2f} mL; stacked without the gap check "
    f"{metrics.volume_ml(stacked, zooms):.2f} mL ({int(truth_ras[:, :, gap].sum())} atrium voxels were in the "
    f"missing slice); everything above slice {gap} would sit {zooms[2]:.2f} mm too low"
)
# The volume error is one slice of atrium at most (zero if the gap misses it), so the report would look
# plausible: the mask's misplacement above the gap, not the volume, is the dangerous part.
