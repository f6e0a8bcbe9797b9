"""A training run's record: written once to config.json, carried by every checkpoint, with the device that ran."""
import json

import pytest

import training
from core.runtime import cli
from core.runtime.checkpoint import load_training_state

FAST = ["--hidden-dim", "8", "--wordvec-dim", "8", "--no-progress", "--dry-run"]


def test_config_json_and_checkpoints_carry_one_record(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(tiny_dataset), "--out", str(out), *FAST]) == 0
    record = json.loads((out / "config.json").read_text())
    for name in ("best.npz", "last.npz"):
        meta = load_training_state(out / name)[0]
        assert {key: meta[key] for key in record} == record
    assert record["settings"]["batch_size"] == 128 and record["model_config"]["hidden_dim"] == 8
    assert record["solver"]["batch_size"] == record["settings"]["batch_size"]


def test_a_numpy_model_records_the_cpu_and_refuses_cuda(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert training.main(["--model", "rnn", "--data-dir", str(tiny_dataset), "--out", str(out), "--device", "cpu",
                          *FAST]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["device"] == "cpu" and record["settings"]["device"] == "cpu"
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: training.main(["--model", "rnn", "--data-dir", str(tiny_dataset), "--out",
                                       str(tmp_path / "cuda"), "--device", "cuda", *FAST]))
    assert exited.value.code == 2 and "numpy, on the CPU only" in capsys.readouterr().err
    assert not (tmp_path / "cuda").exists()
