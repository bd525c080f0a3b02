# Solution to exercise 3 of notebook 01: runs in the notebook's namespace (after its cells).
from nibabel import orientations as ornt

current = ornt.io_orientation(img.affine)
to_ras = ornt.ornt_transform(current, ornt.axcodes2ornt("RAS"))
by_hand = ornt.apply_orientation(raw, to_ras)
print("orientation:", nib.aff2axcodes(img.affine), "| transform (axis, flip):", to_ras.tolist())
print("identical to as_closest_canonical:", np.array_equal(by_hand, image))
