# Solution to exercise 2 of notebook 04: runs in the notebook's namespace (after its cells).
for side in (0, 4, 8):
    blob = truth_c.copy()
    blob[:side, :side, :side] = True  # a cube of false positives in a corner, far from the atrium
    r = metrics.evaluate_case(blob, truth_c, spacing)
    print(f"blob {side}^3 voxels: Dice {r['dice']:.4f} | HD95 {r['hd95_mm']:6.1f} mm | ASSD {r['assd_mm']:.2f} mm")
# Dice hardly moves: even 512 voxels are a few percent of the atrium. HD95 ignores the worst 5 % of surface
# distances, so the small blob slips through it (ASSD still notices); once the blob holds more than 5 % of the
# predicted surface, HD95 jumps to about the distance of the corner.
