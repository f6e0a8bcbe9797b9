"""core.results and results.py: a run stops once validation stops improving; rows of several seeds become mean and
standard deviation; the generated blocks of the README and the docs parse back with their provenance; bad flags
write nothing; and a tiny study has every kind of row, the novel split's figures included."""
import json

import pytest

import results
from core.coco_utils import load_coco_data
from core.inference.report import read_report_data
from core.model.registry import model_kind
from core.results.study import ResultsSettings, run_results
from core.results.tables import (
    BLOCK_END,
    BLOCK_START,
    FULL_COLUMNS,
    PROVENANCE_KEYS,
    aggregate,
    block,
    format_table,
    parse_block,
    provenance,
    write_block,
)
from core.runtime import cli
from core.training.recipes import OptimConfig, recipe
from core.training.solver import Solver, SolverConfig, patience_spent
from tests.test_attention_models import SMALL, TINY_WORLD


@pytest.mark.parametrize("losses, patience, spent", [
    ([3.0, 2.0, 1.0], 1, False),  # improving every epoch
    ([3.0, 2.0, 2.5], 1, True),  # one epoch without improving
    ([3.0, 2.0, 2.0], 1, True),  # equal is no improvement
    ([3.0, 2.0, 2.5], 2, False),
    ([3.0, 2.0, 2.5, 2.1], 2, True),
    ([3.0, 2.0, 2.5, 1.9], 2, False),  # improved on the second epoch of grace
    ([3.0, 4.0, 5.0, 6.0], 0, False),  # 0: never
    ([3.0], 1, False),
])
def test_patience_is_spent_after_that_many_epochs_without_a_better_validation_loss(losses, patience, spent):
    assert patience_spent(losses, patience) == spent


@pytest.mark.parametrize("losses, spent", [
    ([-4.30, -4.35, -4.36, -4.37], True),  # SCST rewards creeping up by a quarter of a percent: flat
    ([-4.30, -4.35, -4.40, -4.45], False),  # about 1% an epoch: improving
    ([-4.30, -4.31, -4.32, -4.33, -4.36], False),  # small gains that add up past 0.5% of the best: an improvement
])
def test_min_improvement_counts_only_gains_above_a_share_of_the_best(losses, spent):
    assert patience_spent(losses, 1, min_improvement=0.005) == spent
    assert patience_spent(losses, 1) is False  # any gain counts without it


def test_only_self_critical_runs_of_the_study_need_a_minimum_gain():
    from core.results.rows import variants

    runs = variants("lstm", 0, "runs", ResultsSettings(models=("lstm",), blind=False))
    assert [(v.settings.objective, v.settings.min_improvement) for v in runs] == [
        ("xe", 0.0), ("scst", ResultsSettings.scst_min_improvement)]


def scripted_solver(data, out_dir, losses, patience, epochs=8):
    """A solver whose training steps are real and whose validation losses, one per epoch, are ``losses``."""
    kind = model_kind("rnn")
    config = kind.make_config({"wordvec_dim": 8, "hidden_dim": 16}).for_data(data["train_features"])
    model = kind.build(data["word_to_idx"], config, seed=0)
    updater = recipe(kind).make_updater(model, OptimConfig(lr=1e-2))
    meta = {"model_type": "rnn", "model_config": model.config(), "idx_to_word": data["idx_to_word"]}
    solver = Solver(updater, data, SolverConfig(epochs=epochs, batch_size=100, seed=0, progress=False,
                                                patience=patience), out_dir, meta, kind.checkpoint_suffix)
    scripted = iter(losses)
    solver.validation_loss = lambda: next(scripted)
    return solver


def test_patience_stops_a_run_on_a_hand_made_validation_history(tiny_dataset, tmp_path):
    data = load_coco_data(tiny_dataset)
    losses = [5.0, 4.0, 3.0, 3.5, 3.2, 1.0, 0.5, 0.1]  # no improvement after epoch 3 for two epochs
    solver = scripted_solver(data, tmp_path / "stopped", losses, patience=2)
    history = solver.train()
    assert history["epoch_val_loss"] == losses[:5] and solver.best_epoch == 2
    assert solver.step == 5 * solver.iterations_per_epoch < solver.total_steps
    saved = json.loads((tmp_path / "stopped" / "history.json").read_text())
    assert saved["stopped_early"] is True and saved["best_epoch"] == 2
    full = scripted_solver(data, tmp_path / "full", losses, patience=0).train()  # the default: every epoch
    assert full["epoch_val_loss"] == losses
    last = scripted_solver(data, tmp_path / "last", [3.0, 2.0, 2.5], patience=1, epochs=3)
    assert len(last.train()["epoch_val_loss"]) == 3 and not last.stopped_early  # flat on its last epoch: not early
    assert json.loads((tmp_path / "last" / "history.json").read_text())["stopped_early"] is False


def test_rows_of_several_seeds_become_mean_and_sample_standard_deviation():
    rows = [{"name": "lstm", "training": "XE", "decoding": "greedy", "seed": seed, "headline": True,
             "CIDEr": cider, "object_f1": f1} for seed, cider, f1 in ((0, 4.0, 0.9), (1, 4.2, 0.8), (2, 4.4, 1.0))]
    rows[1]["attention_correctness"] = 0.5  # held by one seed only: not a figure of the row
    rows.append({"name": "nearest neighbour", "training": "-", "decoding": "retrieval", "headline": False,
                 "CIDEr": 2.0})
    lstm, neighbour = aggregate(rows)
    assert lstm["seeds"] == 3 and lstm["headline"] is True and "seed" not in lstm
    assert lstm["CIDEr"] == pytest.approx(4.2, abs=1e-12) and lstm["CIDEr_std"] == pytest.approx(0.2, abs=1e-12)
    assert lstm["object_f1"] == pytest.approx(0.9, abs=1e-12)
    assert lstm["object_f1_std"] == pytest.approx(0.1, abs=1e-12)
    assert "attention_correctness" not in lstm
    assert neighbour == {"name": "nearest neighbour", "training": "-", "decoding": "retrieval", "headline": False,
                         "CIDEr": 2.0, "CIDEr_std": 0.0, "seeds": 1}
    table = format_table([lstm, neighbour], FULL_COLUMNS).splitlines()
    assert "| lstm | XE | greedy | n/a | n/a | n/a | 420.0 ± 20.0 | 0.900 ± 0.100 |" in table[2]
    assert table[3].startswith("| nearest neighbour | - | retrieval | n/a | n/a | n/a | 200.0 | n/a |")


def test_provenance_names_the_commit_date_machine_and_command(tmp_path):
    source = provenance("python results.py --seeds 3")
    assert set(source) == set(PROVENANCE_KEYS) and source["command"] == "python results.py --seeds 3"
    assert len(source["commit"].split()[0]) == 40 and int(source["commit"].split()[0], 16) >= 0
    assert source["date"].endswith(" UTC") and source["date"][:2] == "20"
    assert source["machine"].startswith("CPU: ") and " logical cores; kernel " in source["machine"]
    assert "; torch " in source["machine"] and "; numpy " in source["machine"] and "numpy BLAS: " in source["machine"]
    assert provenance("x", tmp_path)["commit"] == "unknown"  # outside git


def test_a_generated_block_parses_back_and_keeps_the_page_around_it(tmp_path):
    rows = aggregate([{"name": "lstm", "training": "XE", "decoding": "greedy", "headline": True, "CIDEr": 4.2}])
    source = {"commit": "abc", "date": "2026-01-01 00:00 UTC", "machine": "CPU: x, 2 logical cores",
              "command": "python results.py --seeds 1"}
    page = tmp_path / "docs" / "results.md"
    write_block(page, block(rows, FULL_COLUMNS, "A note.", source))  # a page that is not there yet
    assert page.read_text().startswith(BLOCK_START)
    page.write_text("# Results\n\nProse before.\n\n" + page.read_text() + "\nProse after.\n")
    write_block(page, block(rows, FULL_COLUMNS, "Another note.", dict(source, commit="def")))
    text = page.read_text()
    assert text.startswith("# Results\n\nProse before.\n\n") and text.endswith(f"{BLOCK_END}\n\nProse after.\n")
    assert "A note." not in text and text.count(BLOCK_START) == 1
    parsed = parse_block(text)
    assert parsed["header"][:3] == ["model", "training", "decoding"]
    assert parsed["header"][3:] == [column.header for column in FULL_COLUMNS]
    assert parsed["rows"] == [["lstm", "XE", "greedy", "n/a", "n/a", "n/a", "420.0"] + ["n/a"] * 10]
    assert parsed["provenance"] == dict(source, commit="def")
    plain = tmp_path / "plain.md"
    plain.write_text("# A page without markers\n")
    write_block(plain, block(rows, FULL_COLUMNS, "A note.", source))
    assert plain.read_text().startswith("# A page without markers\n\n" + BLOCK_START)


@pytest.mark.parametrize("argv, flag", [(["--seeds", "0"], "--seeds"), (["--world", "mars"], "--world"),
                                        (["--patience", "-1"], "--patience")])
def test_bad_flags_are_one_line_exit_2_and_write_nothing(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: results.main(argv))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and flag in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, flag", [({"seeds": 0}, "--seeds"), ({"world": "mars"}, "--world")])
def test_settings_no_run_can_take_are_refused_before_anything_is_written(change, flag, tmp_path):
    from core.runtime.errors import UserError

    settings = ResultsSettings(out=str(tmp_path / "runs"), root=str(tmp_path), progress=False, **change)
    with pytest.raises(UserError, match=flag):
        run_results(settings)
    assert list(tmp_path.iterdir()) == []


def test_every_flag_names_its_default():
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        results.parse_args(["--help"])
    options = text.getvalue().split("options:", 1)[1]
    flags = [chunk for chunk in options.split("\n  -")[1:] if not chunk.startswith(("h,", "-no-progress"))]
    assert flags and all("default" in " ".join(chunk.split()) for chunk in flags), flags


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny shapes world with test and novel splits and the 8 x 8 grid."""
    from core.datasets.shapes_build import build_shapes_dataset

    return build_shapes_dataset(tmp_path_factory.mktemp("results_world") / "data", TINY_WORLD, progress=False)


def test_a_beam_evaluation_takes_the_greedy_ones_attention_and_probe_instead_of_measuring_again(tiny_world,
                                                                                                 monkeypatch):
    from core.data.grid import model_inputs
    from core.decoding import DecodeConfig
    from core.evaluation import loop
    from core.evaluation.loop import evaluate_split

    data = load_coco_data(tiny_world, splits=("train", "val", "test"), grid=True)
    kind = model_kind("att_lstm")
    config = kind.make_config(SMALL["att_lstm"], has_grid=True).for_data(model_inputs(data, True)["train_features"])
    model, inputs = kind.build(data["word_to_idx"], config, seed=0), model_inputs(data, True)
    beam = DecodeConfig(beam_size=2)
    greedy = evaluate_split(model, inputs, "test", 16, DecodeConfig(), attention_cells=config.num_cells)
    fresh = evaluate_split(model, inputs, "test", 16, beam, attention_cells=config.num_cells)
    calls = []
    for name in ("decode_records", "forced_relation_accuracy"):
        original = getattr(loop, name)
        monkeypatch.setattr(loop, name, lambda *a, name=name, original=original, **k: (calls.append(name),
                                                                                          original(*a, **k))[1])
    reused = evaluate_split(model, inputs, "test", 16, beam, attention_cells=config.num_cells, greedy=greedy)
    assert calls == ["decode_records"]  # the beam search itself, nothing more
    assert reused["attention"] == fresh["attention"] == greedy["attention"] is not None
    assert reused["relation_probe"] == fresh["relation_probe"]
    assert reused["predictions"] == fresh["predictions"]


def test_a_tiny_study_has_every_kind_of_row_and_writes_its_blocks(tiny_world, tmp_path):
    data_dir = tiny_world
    (tmp_path / "README.md").write_text(f"# Project\n\n{BLOCK_START}\nold\n{BLOCK_END}\n\nMore prose.\n")
    settings = ResultsSettings(models=("lstm",), out=str(tmp_path / "runs"), data_dir=str(data_dir), epochs=1,
                               seeds=2, root=str(tmp_path), progress=False)
    rows = run_results(settings, command="python results.py --models lstm --seeds 2")
    kinds = [(row["name"], row["training"], row["decoding"]) for row in rows]
    assert kinds[:4] == [("lstm", "XE", "greedy"), ("lstm", "XE", "beam 3"), ("lstm", "SCST (mean baseline)", "greedy"),
                         ("lstm blind", "XE", "greedy")]
    assert {row["decoding"] for row in rows[4:]} == {"retrieval"} and len(rows) == 6
    assert [row["seeds"] for row in rows] == [2, 2, 2, 2, 1, 1]
    assert not any("attention_correctness" in row for row in rows)  # no attention model
    greedy, beam = rows[0], rows[1]
    assert 0 <= greedy["novel_pair_recall"] <= 1 and 0 <= greedy["test_seen_pair_recall"] <= 1
    assert "novel_pair_recall" not in beam and rows[4]["novel_pair_recall"] == 0.0  # retrieval: seen pairs only
    assert greedy["epochs"] == 1 and greedy["forced_relation_accuracy"] == beam["forced_relation_accuracy"]
    saved = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert len(saved["rows"]) == 6 and len(saved["per_seed"]) == 2 * 4 + 2
    assert (tmp_path / "runs" / "seed-1" / "lstm" / "best.npz").is_file()
    doc = parse_block((tmp_path / "docs" / "results.md").read_text())
    assert doc["rows"][0][:3] == ["lstm", "XE", "greedy"] and " ± " in doc["rows"][0][6] and len(doc["rows"]) == 6
    assert doc["provenance"]["command"] == "python results.py --models lstm --seeds 2"
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Project\n\n") and readme.endswith("\n\nMore prose.\n")
    headline = parse_block(readme)
    assert [row[:2] for row in headline["rows"]] == [["lstm", "XE"], ["lstm", "SCST (mean baseline)"]]
    assert headline["header"][3:] == ["CIDEr", "object F1", "halluc.", "novel-pair recall", "seen-pair recall"]
    assert set(headline["provenance"]) == set(PROVENANCE_KEYS)
    report = read_report_data(tmp_path / "runs" / "report")  # the first seed's captions, one model under the other
    assert [run["name"] for run in report["runs"]] == [", ".join(kind) for kind in kinds[:4]]
    assert len(report["images"]) == 8 and all(len(image["runs"]) == 4 for image in report["images"])


def test_only_the_first_model_trains_blind():
    from core.results.rows import variants

    settings = ResultsSettings(models=("rnn", "lstm"))
    names = {model: [v.name for v in variants(model, 0, "runs", settings)] for model in settings.models}
    assert names == {"rnn": ["rnn", "rnn", "rnn blind"], "lstm": ["lstm", "lstm"]}
    assert [v.name for v in variants("rnn", 0, "runs", ResultsSettings(models=("rnn",), blind=False))] == ["rnn"] * 2
