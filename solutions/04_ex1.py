# Solution to exercise 1 of notebook 04: runs in the notebook's namespace (after its cells).
it = by_case[shown[0]]
truth_w = np.asanyarray(nib.load(it["label"]).dataobj) > 0
spacing_w = nib.load(it["label"]).header.get_zooms()[:3]
options = {
    "plain": {},
    "TTA, in-plane flips": {"tta": True},
    "TTA, also head-foot": {"tta": True, "tta_axes": (0, 1, 2)},
    "largest component": {"keep_largest": True},
}
rows_w = {}
for name, kwargs in options.items():
    res = inference.predict_case(model, config, it["image"], **kwargs)
    rows_w[name] = metrics.evaluate_case(res["mask"], truth_w, spacing_w)
print(pd.DataFrame(rows_w).T[["dice", "hd95_mm", "assd_mm", "volume_ml_pred"]].round(3))
decided = json.loads((run / "postprocessing.json").read_text())
print(
    f"training decided on its validation cases: tta {decided.get('tta')} "
    f"(Dice {decided.get('val_dice_no_tta')} without, {decided.get('val_dice_tta')} with)"
)
# Training flips along axis 0 (left-right) and either turns patches by quarter turns in the axial plane (a square
# patch; with the flip these also give the front-back flip) or flips them front-back (a patch that is not square). It never turns the heart upside down: a head-foot flip (axis 2) shows the network
# something it never saw, and averaging that copy in usually costs Dice. A flip it did see changes Dice much
# less, a little up or down (printed above). TTA helps only with transforms the network learned to ignore.
# keep_largest changes nothing when the prediction is already one blob.
