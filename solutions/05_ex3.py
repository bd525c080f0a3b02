# Solution to exercise 3 of notebook 05: runs in the notebook's namespace (after its cells).
crossval.ARMS["flip_tta_3d"] = {"infer": {"tta": True, "tta_axes": (0, 1, 2)}}
extra = pd.DataFrame(crossval.evaluate_folds(root, "flip_tta_3d", n_folds, device=device))
scores = {arm: fold_means.loc[arm].tolist() for arm in ablations}
scores["flip_tta_3d"] = extra.groupby("fold")["dice"].mean().tolist()
pd.DataFrame(crossval.ablation_table(scores)).set_index("arm").round(4)
# Training never flips the head-foot axis, so that copy shows the network an upside-down heart: it usually
# lowers Dice. With 2 folds the interval is too wide to say so with confidence. An inference-only arm is cheap to test, which is why it is worth testing instead of assuming.
