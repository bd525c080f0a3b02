# Solution to exercise 3 of notebook 02: runs in the notebook's namespace (after its cells).
from monai.transforms import CropForegroundd
from scipy import ndimage


def smooth_body(img):  # blur the noise away, keep voxels brighter than 20 % of the 99th percentile
    smooth = ndimage.gaussian_filter(np.asarray(img), sigma=(0, 2, 2, 2))
    return (smooth > 0.2 * np.percentile(smooth, 99)) & (np.asarray(img) > 0)  # no spill into a zero border


before = snapshots["Spacingd"]
cropped = CropForegroundd(keys=["image", "label"], source_key="image", select_fn=smooth_body, allow_smaller=True)(
    dict(before)
)
print(
    "pipeline crop:",
    tuple(snapshots["CropForegroundd"]["image"].shape),
    "| smoothed crop:",
    tuple(cropped["image"].shape),
    "| label voxels kept:",
    int(cropped["label"].sum()),
    "of",
    int(before["label"].sum()),
)
