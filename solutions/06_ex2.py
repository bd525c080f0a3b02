# Solution to exercise 2 of notebook 06: runs in the notebook's namespace (after its cells).
f = 0.0039
print(f"implied f = {f}; predicted Dice {2 * f / (1 + f):.4f} (reported 0.0077)")
mask = (bce_prob > 0.05).numpy()
r = metrics.evaluate_case(mask, truth, pixdim)
print(
    f"here: share {mask.mean():.3f}, precision {r['precision']:.4f} vs f {fg_fraction:.4f}, "
    f"Dice {r['dice']:.4f} vs 2f/(1+f) {2 * fg_fraction / (1 + fg_fraction):.4f}"
)
