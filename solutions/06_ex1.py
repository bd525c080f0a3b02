# Solution to exercise 1 of notebook 06: runs in the notebook's namespace (after its cells).
model = tiny_model()
print("--- AdamW lr=10")
run_epochs_until_nan(model, torch.optim.AdamW(model.parameters(), lr=10.0), epochs=4)
for lr in (0.1, 1.0):
    model = tiny_model()
    print(f"--- SGD lr={lr}")
    run_epochs_until_nan(model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), epochs=4)
# How to read the three runs above: a run that trains keeps finite losses and gradient norms of one order of
# magnitude; the warning sign is a norm that grows step after step. AdamW's step is bounded by lr whatever the
# gradient, so the weights jump but the loss often stays finite: the norms still show the trouble. With SGD the
# step is lr x gradient, so the larger learning rate is the one whose norms grow first (compare their lines).
