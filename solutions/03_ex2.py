# Solution to exercise 2 of notebook 03: runs in the notebook's namespace (after its cells).
f = float(label.mean())
p = torch.linspace(0.001, 0.999, 999)
bce = -(f * torch.log(p) + (1 - f) * torch.log(1 - p))
print(f"foreground fraction f = {f:.4f}")
print(f"best constant p = {p[bce.argmin()]:.3f} (= f) gives BCE {bce.min():.3f}; p = 0.5 gives {bce[499]:.3f}")
print(f"0.9656 is {0.9656 / bce.min():.0f}x the loss of a model that ignores the image entirely")
# A loss that never gets below a constant predictor's means that the network learned nothing usable,
# whatever the shape of the curve.
