# Solution to exercise 2 of notebook 07: runs in the notebook's namespace (after its cells).
broken_dir = out / "phantom" / "dicom_missing_slice"
shutil.rmtree(broken_dir, ignore_errors=True)
shutil.copytree(series_dir, broken_dir)
by_z = sorted(broken_dir.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
by_z[len(by_z) // 2].unlink()
try:
    dicom.read_series(broken_dir)
except dicom.DicomSeriesError as err:
    print("refused:", err)
# Stacking without the check would shift every slice above the gap by one slice thickness: the volume would be
# slightly too small and the upper part of the mask would sit one slice too low in the world.
