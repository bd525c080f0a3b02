# Solution to exercise 4 of notebook 01: runs in the notebook's namespace (after its cells).
other = datalist[(case_index + 1) % len(datalist)]
im2 = np.asanyarray(nib.as_closest_canonical(nib.load(other["image"])).dataobj).astype(np.float32)
lb2 = np.asanyarray(nib.as_closest_canonical(nib.load(other["label"])).dataobj) > 0
t_own, d_own = best_threshold(im2, lb2)
print(
    f"threshold tuned on {item['case']} ({t_best:.0f}), applied to {other['case']}: Dice {dice(im2 > t_best, lb2):.3f}"
)
print(f"{other['case']}'s own best threshold: {t_own:.0f} -> Dice {d_own:.3f}")
print(
    f"median LA intensity: {item['case']} {np.median(image[label]):.0f}, {other['case']} "
    f"{np.median(im2[lb2]):.0f}: the intensity scale changes from scan to scan, so the tuned value does not transfer"
)
