# Solution to exercise 4 of notebook 08: runs in the notebook's namespace (after its cells).
if not binary_qc or not record["threshold"] or scored["quality_score"].isna().any():
    print("this run has no single quality score and threshold (none, or one per class): nothing to compare")
else:
    scores_here = scored["quality_score"].to_numpy(dtype=float)
    mine = qc.choose_threshold(scores_here.tolist(), dice.tolist(), qc_run.FAIL_BELOW)
    for name, t in (
        ("chosen on these scans", mine["threshold"]),
        ("the run's (validation)", record["threshold"]["threshold"]),
    ):
        below = scores_here < t
        print(
            f"{name}: threshold {t:.3f} catches {int((below & is_failure).sum())} of {int(is_failure.sum())} failures "
            f"and flags {int((below & good).sum())} of {int(good.sum())} good scans (score alone, no plausibility rule)"
        )
    print("rule:", mine["reason"])
# The threshold chosen here has seen the very scans it is scored on: it is placed between their highest-scoring
# failure and the next score by construction, so catching every failure here is guaranteed, not measured. On new
# scans the highest-scoring failure will land elsewhere. Choose it on one set and report it on another (benchmarks/bench_qc.py scores a
# held-out seed for this reason).
