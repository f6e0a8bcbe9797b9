"""Faults during a run: kill -9 mid-epoch and mid-write, a full disk, two runs on one folder, a second Ctrl-C
during a checkpoint write, an interrupted feature extraction. Each test breaks what the README promises if the
mechanism it guards (atomic writes, the folder lock, the save guard, staged feature files) is taken away.

The script tests run training.py as a subprocess on the tiny CS231n-layout dataset: 48 training captions in
minibatches of 8, so 6 steps an epoch.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from core.runtime.checkpoint import load_training_state
from tests.test_scripts import assert_clean_error
from tests.test_solver import StopAt

ROOT = Path(__file__).resolve().parents[1]
FAST = {"rnn": ["--hidden-dim", "8", "--wordvec-dim", "8"], "lstm": ["--hidden-dim", "8", "--wordvec-dim", "8"],
        "transformer": ["--num-layers", "1", "--num-heads", "2", "--wordvec-dim", "16"]}
SUFFIX = {"rnn": ".npz", "lstm": ".npz", "transformer": ".pt"}
STEPS_PER_EPOCH = 6  # 48 captions / 8
PAGE = 4096


# ----------------------------------------------------------------------------------------------- helpers

def flags(model, data_dir, out, *extra):
    """training.py's flags for a small model on the tiny dataset."""
    return ["--model", model, "--data-dir", str(data_dir), "--out", str(out), "--batch-size", "8", "--no-progress",
            *FAST[model], *extra]


# One thread each: two runs side by side on 2 cores do not fight over them (and compute the same either way).
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def start(args):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def spawn():
    """``start``, and at the test's end a SIGKILL for whatever it started that still runs."""
    started = []

    def spawn(args):
        started.append(start(args))
        return started[-1]

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def finish(process, timeout=120):
    """Wait for a started run; returns its stderr, after checking it succeeded."""
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stderr


def assert_same_params(path_a, path_b):
    """The checkpoints hold bit-identical parameters (same names, dtypes, shapes, values)."""
    a, b = load_training_state(path_a)[1]["params"], load_training_state(path_b)[1]["params"]
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
        else:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


def history(out):
    return json.loads((out / "history.json").read_text())


def step_of(path):
    return load_training_state(path)[0]["run"]["step"]


def temporaries(folder):
    return sorted(p.name for p in Path(folder).glob(".*.tmp"))


def digests(folder):
    """Every entry under ``folder`` (hidden ones too): file -> sha256, folder -> "dir"."""
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*"))}


def file_id(path):
    """Changes whenever a write lands on ``path`` (renamed into place: a new inode and mtime); None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


# ------------------------------------------------------------------------------- 1. kill -9 mid-epoch

@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(model, tiny_dataset, tmp_path, spawn):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    suffix = SUFFIX[model]
    reference = spawn(["training.py", *flags(model, tiny_dataset, straight, "--epochs", "2")])
    resumable = flags(model, tiny_dataset, crashed, "--epochs", "2", "--save-every", "2")
    # SIGKILL as the 10th step begins: 9 steps done, last written at steps 2, 4, 6 and 8, none at the crash.
    killed = run(["-m", "tests.fault_helpers", "10", *resumable])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    meta, _ = load_training_state(crashed / f"last{suffix}")
    assert meta["run"]["step"] == 8 and 8 % STEPS_PER_EPOCH != 0  # inside the second epoch
    assert len(meta["run"]["history"]["train_loss"]) == 8

    resumed = run(["training.py", *resumable, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    finish(reference)
    for name in ("last", "best"):
        assert_same_params(straight / f"{name}{suffix}", crashed / f"{name}{suffix}")
    assert step_of(crashed / f"last{suffix}") == 2 * STEPS_PER_EPOCH
    a, b = history(straight), history(crashed)
    assert len(a["train_loss"]) == 2 * STEPS_PER_EPOCH and a["train_loss"] == b["train_loss"]
    assert a["epoch_val_loss"] == b["epoch_val_loss"] and a["best_epoch"] == b["best_epoch"]


# ----------------------------------------------------------------------- 2. kill -9, again and again

KILLS = 4
KILL_EPOCHS = 50  # 300 steps, a checkpoint after each: 5-15 ms a step on 2 cores, more than the kills use


def writing(last, complete):
    """Whether a write of ``last`` is under way: its temporary exists, or (a writer in place) it has shrunk below
    ``complete`` bytes (each checkpoint is larger than the one before: its history grows)."""
    prefix = f".{last.name}."
    if any(name.startswith(prefix) and name.endswith(".tmp") for name in os.listdir(last.parent)):
        return True
    try:
        return os.stat(last).st_size < complete
    except FileNotFoundError:
        return True


def test_repeated_kill_9_then_resume_equals_uninterrupted(tiny_dataset, tmp_path, spawn):
    """Four SIGKILLs at seeded random moments of a run writing ``last`` after every step, every other one as a
    write of last is under way; each resume continues from a complete checkpoint, and the last one ends where an
    uninterrupted run ends."""
    straight, out = tmp_path / "straight", tmp_path / "killed"
    last = out / "last.npz"

    def args(folder):
        return ["training.py", *flags("lstm", tiny_dataset, folder, "--epochs", str(KILL_EPOCHS), "--save-every", "1")]

    reference = spawn(args(straight))  # beside the killed runs: the 2 cores are shared, the result is not
    delays = np.random.default_rng(2024).uniform(0.0, 0.35, KILLS)
    left_behind, steps = [], [0]
    for kill, delay in enumerate(delays):
        aimed = kill % 2 == 1
        before = file_id(last)
        process = spawn(args(out) + (["--resume"] if before else []))
        deadline = time.monotonic() + 90
        while file_id(last) in (before, None):  # this run has written a checkpoint: it is training
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.002)
        time.sleep(delay)
        if aimed:  # every other kill waits for a write of last to be under way (up to a second)
            complete, until = os.stat(last).st_size, time.monotonic() + 1
            while not writing(last, complete) and time.monotonic() < until:
                pass
        assert process.poll() is None, "the run ended before its kill: make KILL_EPOCHS larger"
        process.kill()
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        left_behind.append(temporaries(out))  # a write the kill cut short
        meta, _ = load_training_state(last)  # whatever the kill interrupted, last is a complete checkpoint
        step = meta["run"]["step"]
        assert steps[-1] < step < KILL_EPOCHS * STEPS_PER_EPOCH
        assert len(meta["run"]["history"]["train_loss"]) == step
        steps.append(step)

    final = run(args(out) + ["--resume"])
    assert final.returncode == 0, final.stderr
    finish(reference)
    for name in ("last.npz", "best.npz"):
        assert_same_params(straight / name, out / name)
    assert step_of(last) == KILL_EPOCHS * STEPS_PER_EPOCH
    # Not the epoch losses: a kill between the save after an epoch's last step and the epoch's end loses that
    # epoch's validation (see test_stop_on_the_last_step_of_an_epoch_keeps_its_end below).
    assert history(straight)["train_loss"] == history(out)["train_loss"]
    assert temporaries(out) == []  # the resumed runs removed what their killed predecessors left
    during_checkpoint = sum(any(name.startswith((".last.", ".best.")) for name in names) for names in left_behind)
    print(f"\n{KILLS} kills at steps {steps[1:]} (delays {np.round(delays, 3).tolist()} s after a first checkpoint);"
          f" {during_checkpoint} during a checkpoint write, temporaries left: {left_behind}")


# -------------------------------------------------------------------------------------- 3. a full disk

@contextmanager
def tmpfs(mount_point, size):
    """A tmpfs of ``size`` bytes (rounded up to pages) at ``mount_point``; skips the test where none can be had."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(folder):
    """Fill the file system of ``folder`` to the last page."""
    chunk = b"\0" * PAGE
    with open(folder / "ballast", "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                return


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(tiny_dataset, tmp_path):
    """A disk that holds the first checkpoint but not the next: exit 2, one line naming the file; the checkpoint
    written before still loads, after a fresh run and after --resume runs on the full disk."""
    measured = tmp_path / "measure"
    assert run(["training.py", *flags("lstm", tiny_dataset, measured, "--epochs", "1")]).returncode == 0
    checkpoint = (measured / "last.npz").stat().st_size
    # .lock and config.json (a page each), slack for a temporary's page, one checkpoint and a half: the first
    # checkpoint fits, the second (written beside the first before it replaces it) does not.
    size = 4 * PAGE + checkpoint + checkpoint // 2
    with tmpfs(tmp_path / "mnt", size) as disk:
        out = disk / "run"
        args = ["training.py", *flags("lstm", tiny_dataset, out, "--epochs", "2", "--save-every", "1")]
        last = out / "last.npz"
        fresh = run(args)
        assert_clean_error(fresh, f"cannot write {last}", "No space left on device")
        assert step_of(last) == 1
        kept = last.read_bytes()
        assert temporaries(out) == []

        resumed = run(args + ["--resume"])  # resumes from step 1, then cannot write step 2's checkpoint
        assert_clean_error(resumed, f"cannot write {last}", "No space left on device")
        assert last.read_bytes() == kept and step_of(last) == 1

        fill(disk)  # not a page left: the run's first write (config.json, as the last run wrote it) fails
        before = digests(out)
        full = run(args + ["--resume"])
        assert_clean_error(full, f"cannot write {out / 'config.json'}", "No space left on device")
        after = digests(out)
        assert after.pop(".lock") != before.pop(".lock")  # the lock's PID, the one file the run could write
        assert after == before and step_of(last) == 1  # none of them half-written, and no temporary left
    print(f"\ncheckpoint {checkpoint} bytes, tmpfs size {size} bytes ({-(-size // PAGE)} pages)")


def test_fresh_run_on_a_full_disk_is_one_line(tiny_dataset, tmp_path):
    with tmpfs(tmp_path / "mnt", 16 * PAGE) as disk:
        fill(disk)
        result = run(["training.py", *flags("lstm", tiny_dataset, disk / "run", "--epochs", "1")])
        assert_clean_error(result, "No space left on device")


# --------------------------------------------------------------------------- 4. two runs on one folder

def process_state(pid):
    """The state letter of /proc/<pid>/stat: R, S, T (stopped), Z..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_second_run_on_a_folder_is_refused_until_the_first_dies(tiny_dataset, tmp_path, spawn):
    out = tmp_path / "run"
    lock, last = out / ".lock", out / "last.npz"
    first = spawn(["training.py", *flags("lstm", tiny_dataset, out, "--epochs", "100000")])
    try:
        deadline = time.monotonic() + 90
        while not (lock.is_file() and lock.read_text() == str(first.pid) and last.is_file()):
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the first run wrote no checkpoint in time"
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)  # frozen, so that its files stay still while the second run tries
        while process_state(first.pid) != "T":
            time.sleep(0.001)
        before = digests(out)

        second = run(["training.py", *flags("lstm", tiny_dataset, out, "--epochs", "1", "--overwrite")])
        assert_clean_error(second, "in use by another run", f"(PID {first.pid})", str(out))
        assert digests(out) == before  # nothing written, removed or replaced, not even a live run's temporaries
    finally:
        first.kill()  # a stopped process dies of SIGKILL too
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL

    third = spawn(["training.py", *flags("lstm", tiny_dataset, out, "--epochs", "1", "--overwrite")])
    finish(third)  # the dead run's lock is no obstacle
    assert lock.read_text() == str(third.pid)
    assert step_of(last) == STEPS_PER_EPOCH  # the third run's own checkpoint
    assert temporaries(out) == []


# ------------------------------------------------------------- 5. a second Ctrl-C during a checkpoint write

def small_solver(data, out_dir, epochs=2, save_every=0):
    """An RNN solver on the tiny dataset: 6 steps an epoch, ``last`` at epoch ends, on a stop and every
    ``save_every`` steps (0: only after 10 minutes, never here)."""
    from core.model.registry import model_kind
    from core.training.recipes import OptimConfig, recipe
    from core.training.solver import Solver, SolverConfig

    kind = model_kind("rnn")
    config = kind.make_config({"wordvec_dim": 8, "hidden_dim": 8}).for_data(data["train_features"])
    model = kind.build(data["word_to_idx"], config, seed=0, device=torch.device("cpu"))
    optim_config = OptimConfig(lr=1e-2)
    updater = recipe(kind).make_updater(model, optim_config, torch.device("cpu"))
    meta = {"model_type": "rnn", "model_config": model.config(), "idx_to_word": data["idx_to_word"]}
    solver_config = SolverConfig(epochs=epochs, batch_size=8, seed=3, progress=False, save_every=save_every)
    return Solver(updater, data, solver_config, out_dir, meta, kind.checkpoint_suffix)


class SigintAfter(StopAt):
    """Wraps an updater: a real SIGINT to this process as step ``step`` ends (the first Ctrl-C)."""

    def __init__(self, updater, step):
        super().__init__(updater, None, step)

    def on_step(self):
        os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset):
    from core.coco_utils import load_coco_data

    return load_coco_data(tiny_dataset)


@pytest.mark.parametrize("when", ["before the writer", "inside the file"])
def test_second_ctrl_c_during_a_checkpoint_write_waits_for_it(when, tiny_data, tmp_path, monkeypatch):
    import core.runtime.checkpoint
    import core.training.solver

    solver = small_solver(tiny_data, tmp_path)
    solver.updater = SigintAfter(solver.updater, step=3)  # mid first epoch: no checkpoint yet
    writes = []
    if when == "before the writer":
        real_save = core.training.solver.save_training_state

        def save(path, meta, state):
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, as the write begins
            real_save(path, meta, state)
            writes.append(Path(path))

        monkeypatch.setattr(core.training.solver, "save_training_state", save)
    else:
        real_savez = np.savez

        def savez(file, **arrays):  # called with the temporary file open, before a byte of it is written
            os.kill(os.getpid(), signal.SIGINT)
            real_savez(file, **arrays)
            writes.append(Path(file.name))

        monkeypatch.setattr(core.runtime.checkpoint.np, "savez", savez)
    handler = signal.getsignal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        solver.train()
    assert len(writes) == 1  # the stop's checkpoint, written to its end before the interrupt
    assert solver.step == 3 and solver.last_path.is_file()
    meta, state = load_training_state(solver.last_path)
    assert meta["run"]["step"] == 3 and len(meta["run"]["history"]["train_loss"]) == 3
    for name, value in solver.updater.snapshot().items():
        assert np.array_equal(state["params"][name], value), name
    assert temporaries(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is handler  # the loop gave Ctrl-C back


@pytest.mark.parametrize("target, save_every", [("last", 2), ("best", 0)])
def test_first_ctrl_c_during_a_checkpoint_write_stops_after_the_step(target, save_every, tiny_data, tmp_path,
                                                                     monkeypatch):
    import core.training.solver

    real_save = core.training.solver.save_training_state
    sent = []

    def save(path, meta, state):
        if Path(path).name.startswith(target) and not sent:
            sent.append(path)
            os.kill(os.getpid(), signal.SIGINT)  # the one Ctrl-C of the run, as this write begins
        real_save(path, meta, state)

    monkeypatch.setattr(core.training.solver, "save_training_state", save)
    solver = small_solver(tiny_data, tmp_path, save_every=save_every)
    with pytest.raises(KeyboardInterrupt):
        solver.train()
    assert sent and solver.step == {"last": 2, "best": STEPS_PER_EPOCH}[target]
    assert solver.last_path.is_file() and step_of(solver.last_path) == solver.step
    assert solver.last_saved_step == solver.step  # what the interrupted-at message names


@pytest.mark.parametrize("stop_step", [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH])
def test_stop_on_the_last_step_of_an_epoch_keeps_its_end(stop_step, tiny_data, tmp_path):
    straight = small_solver(tiny_data, tmp_path / "straight")
    straight.train()
    stopped = small_solver(tiny_data, tmp_path / "stopped")
    stopped.updater = SigintAfter(stopped.updater, step=stop_step)
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    resumed = small_solver(tiny_data, tmp_path / "stopped")
    resumed.resume()
    resumed.train()
    assert resumed.history["epoch_val_loss"] == straight.history["epoch_val_loss"]
    assert_same_params(straight.best_path, resumed.best_path)


# ------------------------------------------------------------------ 6. feature extraction, all or none

class Interrupting:
    """An image sequence whose reading is interrupted (Ctrl-C) as it starts."""

    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, key):
        raise KeyboardInterrupt


def test_interrupted_feature_extraction_leaves_the_previous_files(tmp_path):
    from core.features.extract import write_feature_files
    from tests.test_features import ToyEncoder

    rng = np.random.default_rng(11)
    old, new = (rng.integers(0, 256, size=(10, 6, 6, 3), dtype=np.uint8) for _ in range(2))

    def write(images, val_images, tag):
        splits = {"train": (images, [f"{tag}/train/{i}" for i in range(10)]),
                  "val": (val_images, [f"{tag}/val/{i}" for i in range(4)])}
        write_feature_files(tmp_path, ToyEncoder(), splits, {"name": f"toy-{tag}"}, pca_dim=3, batch_size=4,
                            device="cpu", progress=False)

    write(old, old[:4], "old")
    before = digests(tmp_path)
    assert len(before) == 8 and "dir" not in before.values()

    with pytest.raises(KeyboardInterrupt):
        write(new, Interrupting(4), "new")  # train written (to staging), val interrupted
    assert digests(tmp_path) == before  # byte for byte, and no staging folder or temporary left

    write(new, new[:4], "new")
    after = digests(tmp_path)
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in before), [n for n in before if after[n] == before[n]]
    assert (tmp_path / "val2014_urls.txt").read_text().splitlines() == [f"new/val/{i}" for i in range(4)]
