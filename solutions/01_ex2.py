# Solution to exercise 2 of notebook 01: runs in the notebook's namespace (after its cells).
tolerances = np.linspace(0.02, 0.2, 10)
grown_t = [region_grow(image, seed_voxel, tolerance=t) for t in tolerances]
covered = [(g & label).sum() / n_la for g in grown_t]  # 1 - holes
inside = [(g & label).sum() / g.sum() for g in grown_t]  # 1 - leak
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(tolerances, [dice(g, label) for g in grown_t], "o-", label="Dice")
ax.plot(tolerances, covered, "s--", label="share of the LA covered")
ax.plot(tolerances, inside, "^:", label="share of the region inside the LA")
ax.set(
    xlabel="tolerance (fraction of intensity range)",
    ylabel="fraction",
    ylim=(0, 1),
    title=f"{item['case']}: region growing from the seed",
)
ax.legend(loc="center right", fontsize=8)
print(
    f"tightest: covers {covered[0]:.0%} of the LA, {inside[0]:.0%} inside it | loosest: covers "
    f"{covered[-1]:.0%}, {inside[-1]:.0%} inside | a tolerance with both above 90 %: "
    f"{any(c > 0.9 and s > 0.9 for c, s in zip(covered, inside))}"
)
