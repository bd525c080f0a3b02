"""Test helper: run ``heartseg_utils.train`` under torchrun and record, per process, what it trained on.

Used by tests/test_ddp.py; not part of the package. Launch it like the real thing:

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_probe.py --run_dir runs/x ...

It wraps ``train_one_epoch`` (the package is unchanged) and writes ``<run_dir>/probe/rank<R>.json`` (the
dataset indices the process's sampler drew and the batches it stepped on, per epoch; the wrapper type) and
``rank<R>.pt`` (the network's state_dict in that process after ``train`` returned). With
``PROBE_SNAPSHOT_AFTER_EPOCH=K`` rank 0 also copies run_dir's files to ``probe/after_epochK/`` when epoch K
has been written: the state a run killed after epoch K leaves behind, to resume from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from heartseg_utils import train as T

record: dict = {"epochs": []}
original_train_one_epoch = T.train_one_epoch
RANK = int(os.environ.get("RANK", "0"))
SNAPSHOT_AFTER = int(os.environ.get("PROBE_SNAPSHOT_AFTER_EPOCH", "0"))
flags = argparse.ArgumentParser(add_help=False)
flags.add_argument("--run_dir", required=True)
RUN_DIR = Path(flags.parse_known_args(sys.argv[1:])[0].run_dir)


def recording_train_one_epoch(model, loader, *args, **kwargs):
    """Note the sampler's indices for this epoch and count the batches that reach the model."""
    if RANK == 0 and SNAPSHOT_AFTER and len(record["epochs"]) == SNAPSHOT_AFTER:  # epoch K's files are written
        snapshot = RUN_DIR / "probe" / f"after_epoch{SNAPSHOT_AFTER}"
        snapshot.mkdir(parents=True)
        for f in RUN_DIR.iterdir():
            if f.is_file():
                shutil.copy2(f, snapshot / f.name)
    epoch = {"indices": [int(i) for i in loader.sampler], "batches": 0}  # set_epoch came first: same order
    record["epochs"].append(epoch)
    record["model"] = model

    def counted():
        for batch in loader:
            epoch["batches"] += 1
            yield batch

    return original_train_one_epoch(model, counted(), *args, **kwargs)


if __name__ == "__main__":
    T.train_one_epoch = recording_train_one_epoch
    metrics = T.main(sys.argv[1:])
    model = record.pop("model")
    out = RUN_DIR / "probe"
    out.mkdir(exist_ok=True)
    torch.save(getattr(model, "module", model).state_dict(), out / f"rank{RANK}.pt")
    (out / f"rank{RANK}.json").write_text(json.dumps({**record, "wrapper": type(model).__name__, "metrics": metrics}))
