# Solution to exercise 5 of notebook 06: runs in the notebook's namespace (after its cells).
for patience in (3, 5, 10):
    best_dice, best_epoch, stop = -1.0, 0, None
    for row in fit_history.itertuples():
        if row.val_dice > best_dice:
            best_dice, best_epoch = row.val_dice, row.epoch
        elif row.epoch - best_epoch >= patience:
            stop = row.epoch
            break
    print(
        f"patience {patience:>2}: stops at epoch {stop or fit_epochs}, best_model.pt = epoch {best_epoch} (Dice {best_dice:.3f})"
    )
# This replays the plain rule; train.run_training with the poly schedule also waits until half the planned epochs
# are done before it counts. Every epoch after the best one only fitted the training volume more closely: early stopping saves that time
# and best_model.pt keeps the best weights. A small patience may stop at a noisy dip, a large one wastes epochs.
