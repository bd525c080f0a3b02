# Solution to exercise 4 of notebook 05: runs in the notebook's namespace (after its cells).
import nibabel as nib
from scipy import ndimage

from heartseg_utils import inference

rows = []
model, config = inference.load_run(crossval.fold_dir(root, "baseline", 0), device)
for it in data.split_cases(crossval.fold_dir(root, "baseline", 0)):
    prob = inference.predict_case(model, config, it["image"])["probability"]
    truth = np.asanyarray(nib.load(it["label"]).dataobj) != 0
    dice = lambda m: 2 * (m & truth).sum() / max(m.sum() + truth.sum(), 1)
    rows.append(
        {"case": it["case"], "plain": dice(prob >= 0.5), "smoothed": dice(ndimage.gaussian_filter(prob, 1.0) >= 0.5)}
    )
smooth = pd.DataFrame(rows).set_index("case")
d = smooth["smoothed"] - smooth["plain"]  # paired: the same model, the same cases
half = stats.t.ppf(0.975, len(d) - 1) * d.std() / np.sqrt(len(d))
verdict = "helps" if d.mean() - half > 0 else "hurts" if d.mean() + half < 0 else "is within the noise"
print(
    f"smoothed - plain over {len(d)} cases: {100 * d.mean():+.2f} points, 95 % interval "
    f"[{100 * (d.mean() - half):+.2f}, {100 * (d.mean() + half):+.2f}]: smoothing {verdict}"
)
# Smoothing ignores the image; a CRF would also follow intensity edges. Either way it is a boundary tweak: the
# printed gain and interval say how large it was here, and whether these few cases can tell it from noise.
