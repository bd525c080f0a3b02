# Solution to exercise 1 of notebook 06: runs in the notebook's namespace (after its cells).
model = tiny_model()
run_epochs_until_nan(model, torch.optim.AdamW(model.parameters(), lr=10.0))
for lr in (0.1, 1.0):
    model = tiny_model()
    print(f"--- SGD lr={lr}")
    run_epochs_until_nan(model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
# AdamW's step is bounded by lr, so weights jump but the loss may stay finite: the norms still show it.
