# Solution to exercise 1 of notebook 01: runs in the notebook's namespace (after its cells).
biggest = stats["la_ml"].idxmax()
it = next(d for d in datalist if d["case"] == biggest)
big = nib.as_closest_canonical(nib.load(it["label"]))
big_label = np.asanyarray(big.dataobj) > 0
ml = big_label.sum() * np.prod(big.header.get_zooms()[:3]) / 1000
print(f"{biggest}: {ml:.1f} mL (table: {stats.loc[biggest, 'la_ml']:.1f} mL)")
big_image = np.asanyarray(nib.as_closest_canonical(nib.load(it["image"])).dataobj)
centre_big = tuple(int(round(c)) for c in ndimage.center_of_mass(big_label))
fig = viz.letter_planes(viz.show_planes(big_image, big_label, index=centre_big, title=f"{biggest}: the largest LA"))
