# Solution to exercise 4 of notebook 07: runs in the notebook's namespace (after its cells).
for step in (1, 2):
    tv, tf = surface.mask_surface(truth, affine=case.affine, step_size=step)
    pv, pf = surface.mask_surface(pred_mask, affine=from_nifti.affine, step_size=step) if pred_mask.any() else ([], [])
    print(f"step {step}: truth {len(tv)} vertices | prediction {len(pv)} vertices")
print(surface.write_obj(out / "phantom" / "truth.obj", tv, tf))
