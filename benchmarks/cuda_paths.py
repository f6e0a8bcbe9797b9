"""Run the project's CUDA paths end to end on a small shapes world and print what each did (times, losses, agreement).

    python -m benchmarks.cuda_paths --out /tmp/cuda_paths      # exits 0 with a note where there is no CUDA

Each step is the real command a user runs: the world's build, the Transformer trained with autocast (cross-entropy,
then self-critical), the shapes encoder's features re-extracted on the GPU and compared with the CPU-built ones, and
a torchrun group on the nccl backend. The last line is a JSON summary.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from core.data.layout import CONFIG_FILE, FEATURES_KEY, HISTORY_FILE, checkpoint_file, features_file
from core.runtime.checkpoint import TORCH_SUFFIX


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the world, the runs and the features")
    p.add_argument("--num-train", type=int, default=3000, help="train images of the small world (default 3000)")
    p.add_argument("--epochs", type=int, default=3, help="cross-entropy epochs of the Transformer (default 3)")
    p.add_argument("--threads", type=int, default=8, help="CPU threads of the world's build (default 8)")
    p.add_argument("--device", default="cuda", help="cuda, or cpu to try the check itself where there is no GPU")
    return p.parse_args(argv)


def step(name, command, summary):
    """Run one command, echo its output, record its wall time; a failure stops the check with its exit code."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    summary[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
    if done.returncode:
        summary[f"{name}_exit"] = done.returncode
        print(json.dumps(summary))
        sys.exit(done.returncode)


def run_record(run_dir):
    """What a training run wrote about itself: its device, backend and losses."""
    record = json.loads((run_dir / CONFIG_FILE).read_text())
    history = json.loads((run_dir / HISTORY_FILE).read_text())
    return {"device": record["device"], "backend": record.get("backend"),
            "memory": record["model_config"].get("memory"),
            "epoch_train_loss": [round(x, 4) for x in history["epoch_train_loss"]],
            "epoch_val_loss": [round(x, 4) for x in history["epoch_val_loss"]]}


def features_agree(built, extracted):
    """Largest absolute difference between two datasets' raw train features (before PCA, whose signs are
    arbitrary), and their largest value."""
    arrays = []
    for folder in (built, extracted):
        with h5py.File(folder / features_file("train", pca_features=False), "r") as f:
            arrays.append(np.asarray(f[FEATURES_KEY]))
    return {"max_abs_diff": float(np.abs(arrays[0] - arrays[1]).max()), "max_abs": float(np.abs(arrays[0]).max())}


def main(argv=None):
    args = parse_args(argv)
    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    summary = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__}
    world, runs, py = args.out / "shapes", args.out / "runs", sys.executable
    common = ["--data-dir", str(world), "--no-progress"]
    step("build", [py, "-m", "core.datasets.shapes_build", "--out", str(world), "--num-train", str(args.num_train),
                   "--num-val", "500", "--num-test", "500", "--threads", str(args.threads)], summary)
    step("train_xe", [py, "training.py", "--model", "transformer", "--device", device, "--epochs", str(args.epochs),
                      "--out", str(runs / "xe"), *common], summary)
    summary["xe"] = run_record(runs / "xe")
    best = runs / "xe" / checkpoint_file("best", TORCH_SUFFIX)
    step("train_scst", [py, "training.py", "--model", "transformer", "--device", device, "--objective", "scst",
                        "--epochs", "1", "--init-from", str(best), "--out", str(runs / "scst"), *common], summary)
    summary["scst"] = run_record(runs / "scst")
    step("extract", [py, "features_extraction.py", "--encoder", "shapes", "--data-dir", str(world), "--device", device,
                     "--out", str(args.out / "features"), "--no-progress"], summary)
    summary["features_cuda_vs_cpu"] = features_agree(world, args.out / "features")
    step("torchrun", ["torchrun", "--nproc_per_node", "1", "training.py", "--model", "transformer", "--device",
                      device, "--epochs", "1", "--out", str(runs / "ddp"), *common], summary)
    summary["torchrun"] = run_record(runs / "ddp")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
