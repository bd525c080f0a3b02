# Solution to exercise 3 of notebook 05: runs in the notebook's namespace (after its cells).
crossval.ARMS["flip_tta_3d"] = {"infer": {"tta": True, "tta_axes": (0, 1, 2)}}
extra = pd.DataFrame(crossval.evaluate_folds(root, "flip_tta_3d", n_folds, device=device)).set_index("case")["dice"]
for other in ("flip_tta", "baseline"):
    d = extra - wide[other]
    half = stats.t.ppf(0.975, len(d) - 1) * d.std() / np.sqrt(len(d))
    verdict = "helps" if d.mean() - half > 0 else "hurts" if d.mean() + half < 0 else "is within the noise"
    print(
        f"flip_tta_3d vs {other} over {len(d)} cases: {100 * d.mean():+.2f} points, 95 % interval "
        f"[{100 * (d.mean() - half):+.2f}, {100 * (d.mean() + half):+.2f}]: the extra flip {verdict}"
        + (" (against the in-plane flips alone: the head-foot flip's own effect)" if other == "flip_tta" else "")
    )
# Training never flips the head-foot axis, so that copy shows the network an upside-down heart. The comparison with
# flip_tta isolates that one flip; the per-case interval (the models are fixed, so the case is the unit) says
# whether this run can tell.
