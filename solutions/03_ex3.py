# Solution to exercise 3 of notebook 03: runs in the notebook's namespace (after its cells).
net = model_from_config(planned)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
xb, yb = torch.randn(2, 1, *the_plan["roi_size"]), (torch.rand(2, 1, *the_plan["roi_size"]) > 0.9).long()


def best_step(dtype, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(xb)
        make_loss("dicece")(out.float(), yb).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return min(times)


fp32, bf16 = best_step(None), best_step(torch.bfloat16)
print(f"float32 {fp32 * 1e3:.0f} ms | bf16 autocast {bf16 * 1e3:.0f} ms | bf16 / fp32 = {bf16 / fp32:.2f}")
choice, reason = amp_decision("auto", run_device, net, tuple(xb.shape))
faster, picked = ("bf16" if bf16 < fp32 else "float32"), ("bf16" if choice is not None else "float32")
print(f"amp_decision('auto'): {reason}")
verdict = "they agree" if faster == picked else "they disagree: the timings are close, or the machine was busy"
print(f"the faster one here is {faster}; amp_decision picks {picked}: {verdict}")
