# Solution to exercise 5 of notebook 03: runs in the notebook's namespace (after its cells).
rows = []
for dev, minutes, gib in (("cpu", 2, None), ("cpu", 4.5, None), ("cpu", 12, None), ("cuda", 0, 8), ("cuda", 0, 80)):
    p = plan.make_plan(
        fingerprint,
        device=dev,
        time_budget_min=minutes,
        gpu_memory_gib=gib,
        step_timer=plan.measured_step,
        max_epochs=max_epochs,
    )
    chosen = p.get("timing", {}).get("chosen", {})
    rows.append(
        {
            "device": dev,
            "budget": f"{minutes} min" if dev == "cpu" else f"{gib} GiB",
            "pixdim": p["pixdim"],
            "roi_size": p["roi_size"],
            "batch": p["batch_size"],
            "step_s": chosen.get("step_seconds"),
            "expected_steps": chosen.get("steps"),
        }
    )
pd.DataFrame(rows)
# On the CPU the steps stay near plan.CPU_STEPS (or what max_epochs allows) and a longer budget buys finer
# voxels and bigger patches, until the data's own resolution; on a GPU memory caps the patch.
