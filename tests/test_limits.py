"""Extreme values are refused before anything is allocated, with one line naming the limit; flags the chosen
mode would ignore are refused, naming the mode that takes them; Ctrl-C during start-up is one line, code 130."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.runtime.distributed import process_group
from core.runtime.errors import UserError
from tests.test_bad_inputs import MAINS, assert_one_line_exit, checkpoint_edit, digest, world  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]


def config_change(**values):
    def change(arrays):
        meta = json.loads(str(arrays["meta"]))
        meta["model_config"].update(values)
        arrays["meta"] = np.array(json.dumps(meta))
    return change


def transformer_config(**values):
    """A copy of the Transformer dry run's checkpoint whose config asks for ``values``."""
    def make(world, tmp_path):
        import torch

        payload = torch.load(world / "transformer" / "best.pt", weights_only=True)
        meta = json.loads(payload["meta"])
        meta["model_config"].update(values)
        payload["meta"] = json.dumps(meta)
        torch.save(payload, tmp_path / "edited.pt")
        return str(tmp_path / "edited.pt")
    return make


LSTM = ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--no-progress"]
CASES = [
    ("infer", [*LSTM, "--beam-size", "1000000"], "1..100"),
    ("infer", [*LSTM, "--beam-size", "3", "--length-penalty", "1e308"], "0..10"),
    ("infer", [*LSTM, "--max-length", "1000000000"], "--max-length 1000"),
    ("infer", [*LSTM, "--temperature", "1e-300"], "0.001 or more"),
    ("infer", ["--model", "lstm", "--checkpoint", checkpoint_edit(config_change(hidden_dim=2_000_000))], "GiB"),
    ("infer", ["--model", "transformer", "--checkpoint", transformer_config(num_layers=100_000)], "at most 64"),
    ("infer", ["--model", "transformer", "--checkpoint", transformer_config(max_length=10 ** 9)], "at most 64"),
    ("train", ["--model", "lstm", "--objective", "scst", "--scst-samples", "1000000000"], "1..256"),
    ("train", ["--model", "lstm", "--init-from", "{lstm}/best.npz"], "--init-from only apply to --objective scst"),
    ("train", ["--model", "lstm", "--scst-baseline", "greedy"], "--scst-baseline only apply to --objective scst"),
    ("train", ["--model", "lstm", "--scst-samples", "9"], "--objective scst"),
    ("train", ["--model", "lstm", "--device", "cuda:3"], "numpy, on the CPU only"),
    ("infer", [*LSTM, "--device", "cuda"], "numpy, on the CPU only"),
    ("train", ["--model", "transformer", "--device", "cuda:3"], "--device cuda:3"),
    ("shapes", ["--seed", "-1"], "--seed"),
    ("shapes", ["--seed", str(2 ** 32)], "--seed"),
    ("shapes", ["--extra-train-scenes", "-5"], "--extra-train-scenes"),
    ("shapes", ["--num-test", "-1"], "--num-test"),
]


def expand(arg, world, tmp_path):
    return arg(world, tmp_path) if callable(arg) else arg.format(lstm=world / "lstm")


@pytest.mark.parametrize("script, argv, fragment", CASES, ids=[f"{c[0]} {c[2]}" for c in CASES])
def test_an_extreme_value_or_a_flag_that_does_not_apply_is_one_line(world, tmp_path, capsys, script, argv,
                                                                     fragment):
    before = digest(world)
    assert_one_line_exit(MAINS[script], [expand(arg, world, tmp_path) for arg in argv], capsys, fragment)
    assert digest(world) == before


@pytest.mark.parametrize("variable, value", [("CAPTION_RENDEZVOUS_TIMEOUT", "abc"),
                                             ("CAPTION_RENDEZVOUS_TIMEOUT", "-1"),
                                             ("CAPTION_RENDEZVOUS_TIMEOUT", "inf"), ("MASTER_PORT", "99999")])
def test_a_malformed_rendezvous_setting_is_one_line(variable, value):
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", variable: value}
    with pytest.raises(UserError, match=variable) as raised:
        with process_group("cpu", env=env):
            pass
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("script", ["training.py", "inference.py"])
def test_ctrl_c_during_start_up_is_one_line_and_code_130(script, tmp_path):
    process = subprocess.Popen([sys.executable, script, "--model", "lstm", "--out", str(tmp_path / "run")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # inside the imports (torch alone takes longer)
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted"], err
    assert not (tmp_path / "run").exists()
