# Solution to exercise 4 of notebook 06: runs in the notebook's namespace (after its cells).
context_gib = 0.5  # assumption: the CUDA context on a typical GPU (measure it with torch.cuda.mem_get_info)
weights_gib = 4 * models.count_parameters(unet) * 4 / 2**30  # weights + gradients + AdamW's 2 moments, fp32
usable_gib = 4 - context_gib - weights_gib
print(
    f"usable for activations: 4 - {context_gib} (context) - {weights_gib:.2f} (weights, optimiser) = {usable_gib:.2f} GiB"
)
print(f"margin measured in section 4: {margin:.1f}x")
for bytes_per_value, name in ((4, "fp32"), (2, "AMP")):
    fitting = [
        s
        for s in range(64, 257, 16)
        if margin * architecture.activation_bytes(unet, (s, s, s), 2, bytes_per_value=bytes_per_value) / 2**30
        <= usable_gib
    ]
    print(f"{name}: largest side worth trying {max(fitting) if fitting else None}")
# A lower bound + a margin gives a candidate, not a guarantee: run one training step at that size on the GPU with
# debug.measure_peak_memory (or torch.cuda.max_memory_allocated) and step down by 16 if it does not fit.
