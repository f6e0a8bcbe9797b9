"""The classic CS231n import paths: every name assignment 3's code imports, from the module it imports it from, with
the signatures its calls need; and the captioning notebooks' solver cells run as written, on a tiny dataset."""
import importlib
import inspect
from dataclasses import fields

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from core.captioning_solver import CaptioningSolver, SolverOptions
from core.captioning_solver_transformer import CaptioningSolverTransformer, TransformerSolverOptions
from core.coco_utils import decode_captions, load_coco_data, sample_coco_minibatch
from core.data.layout import COCO_ARCHIVE_TOP, default_data_dir
from core.model.rnn_model import CaptioningRNN
from core.model.transformer import CaptioningTransformer
from core.rnn_layers import temporal_softmax_loss
from core.training.optim import NumpyUpdater
from core.training.recipes import OptimConfig
from core.training.solver import learning_rate
from tests.conftest import write_tiny_cs231n

CLASSIC_NAMES = {
    "core.rnn_layers": ["affine_forward", "affine_backward", "rnn_step_forward", "rnn_step_backward", "rnn_forward",
                        "rnn_backward", "word_embedding_forward", "word_embedding_backward", "sigmoid",
                        "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
                        "temporal_affine_forward", "temporal_affine_backward", "temporal_softmax_loss"],
    "core.transformer_layers": ["PositionalEncoding", "MultiHeadAttention"],
    "core.coco_utils": ["load_coco_data", "decode_captions", "sample_coco_minibatch"],
    "core.optim": ["sgd", "sgd_momentum", "rmsprop", "adam"],
    "core.image_utils": ["image_from_url", "load_image", "preprocess_image", "deprocess_image", "blur_image",
                         "SQUEEZENET_MEAN", "SQUEEZENET_STD"],
    "core.model.rnn_model": ["CaptioningRNN"],
    "core.model.transformer": ["CaptioningTransformer"],
    "core.captioning_solver": ["CaptioningSolver"],
    "core.captioning_solver_transformer": ["CaptioningSolverTransformer"],
}
# How CS231n's code calls what it imports: (module, name, positional arguments, keyword arguments) that must bind.
CALLS = [
    ("core.rnn_layers", "rnn_step_forward", 5, ()), ("core.rnn_layers", "rnn_step_backward", 2, ()),
    ("core.rnn_layers", "rnn_forward", 5, ()), ("core.rnn_layers", "rnn_backward", 2, ()),
    ("core.rnn_layers", "lstm_step_forward", 6, ()), ("core.rnn_layers", "lstm_step_backward", 3, ()),
    ("core.rnn_layers", "lstm_forward", 5, ()), ("core.rnn_layers", "lstm_backward", 2, ()),
    ("core.rnn_layers", "word_embedding_forward", 2, ()), ("core.rnn_layers", "word_embedding_backward", 2, ()),
    ("core.rnn_layers", "temporal_affine_forward", 3, ()), ("core.rnn_layers", "temporal_affine_backward", 2, ()),
    ("core.rnn_layers", "temporal_softmax_loss", 3, ("verbose",)), ("core.rnn_layers", "affine_forward", 3, ()),
    ("core.rnn_layers", "affine_backward", 2, ()), ("core.rnn_layers", "sigmoid", 1, ()),
    ("core.transformer_layers", "PositionalEncoding", 1, ("dropout", "max_len")),
    ("core.transformer_layers", "MultiHeadAttention", 2, ("dropout",)),
    ("core.coco_utils", "load_coco_data", 0, ("base_dir", "max_train", "pca_features")),
    ("core.coco_utils", "decode_captions", 2, ()),
    ("core.coco_utils", "sample_coco_minibatch", 1, ("batch_size", "split")),
    ("core.optim", "adam", 2, ("config",)), ("core.optim", "sgd_momentum", 3, ()),
    ("core.image_utils", "image_from_url", 1, ()), ("core.image_utils", "load_image", 1, ("size",)),
    ("core.image_utils", "preprocess_image", 1, ()), ("core.image_utils", "deprocess_image", 1, ("rescale",)),
    ("core.image_utils", "blur_image", 1, ()),
]


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: extra BLAS and torch threads only add synchronisation on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """The notebooks' ``small_data = load_coco_data(max_train=50)`` on a tiny dataset of 60 training images, one
    caption each, read from its image: 50 captions a model can learn by heart."""
    base_dir = write_tiny_cs231n(tmp_path_factory.mktemp("classic") / "data", num_train=60, captions_per_image=1)
    return load_coco_data(base_dir=base_dir, max_train=50)


@pytest.mark.parametrize("module, names", CLASSIC_NAMES.items())
def test_every_classic_name_imports_from_its_classic_module(module, names):
    imported = importlib.import_module(module)
    missing = [name for name in names if not hasattr(imported, name)]
    assert missing == []


@pytest.mark.parametrize("module, name, positional, keywords", CALLS)
def test_cs231n_calls_bind(module, name, positional, keywords):
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    signature.bind(*range(positional), **{keyword: None for keyword in keywords})


def test_classic_defaults():
    loader = inspect.signature(load_coco_data).parameters
    assert [loader[name].default for name in ("base_dir", "max_train", "pca_features")] == \
        [default_data_dir(COCO_ARCHIVE_TOP), None, True]
    sampler = inspect.signature(sample_coco_minibatch).parameters
    assert (sampler["batch_size"].default, sampler["split"].default) == (100, "train")
    assert {f.name: f.default for f in fields(SolverOptions) if f.name != "optim_config"} == {
        "update_rule": "sgd", "lr_decay": 1.0, "batch_size": 100, "num_epochs": 10, "print_every": 10,
        "verbose": True, "seed": 0}
    assert SolverOptions().optim_config == {}
    assert TransformerSolverOptions().learning_rate == 1e-3
    model = CaptioningTransformer(word_to_idx={"<NULL>": 0, "<START>": 1, "<END>": 2}, input_dim=8, wordvec_dim=16)
    assert {key: model.config()[key] for key in ("num_heads", "num_layers", "max_length")} == \
        {"num_heads": 4, "num_layers": 2, "max_length": 50}


def test_temporal_softmax_loss_verbose_prints_and_changes_nothing(capsys):
    rng = np.random.default_rng(0)
    x, y, mask = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3)), rng.random((2, 3)) > 0.5
    quiet = temporal_softmax_loss(x, y, mask)
    assert capsys.readouterr().out == ""
    loud = temporal_softmax_loss(x, y, mask, verbose=True)
    assert capsys.readouterr().out == "dx, flattened: (6, 4)\n"
    assert quiet[0] == loud[0] and np.array_equal(quiet[1], loud[1])


def test_lr_decay_multiplies_the_rate_after_each_epoch():
    config = OptimConfig(lr=1.0, lr_decay=0.5, min_lr_ratio=1.0)
    assert [learning_rate(config, step, 6, steps_per_epoch=2) for step in range(6)] == [1, 1, .5, .5, .25, .25]
    assert learning_rate(OptimConfig(lr=1.0), 5, 6, 2) == learning_rate(OptimConfig(lr=1.0, lr_decay=1.0), 5, 6, 3)


def overfits(loss_history, iterations, below):
    """The loss of each iteration was kept, and it fell from where it started to near 0."""
    return len(loss_history) == iterations and loss_history[0] > 2 and np.mean(loss_history[-5:]) < below


def sampled_and_true(model, small_data, **options):
    """The notebooks' last cell: two training captions, and the model's captions of their images, decoded."""
    np.random.seed(231)
    gt, features, urls = sample_coco_minibatch(small_data, split="train", batch_size=2)
    assert len(urls) == 2
    sample = model.sample(features, **options)
    assert isinstance(sample, np.ndarray) and np.issubdtype(sample.dtype, np.integer)
    return decode_captions(sample, small_data["idx_to_word"]), decode_captions(gt, small_data["idx_to_word"])


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_rnn_notebook_overfits_50_captions(cell_type, small_data, tmp_path, monkeypatch, capsys):
    # The notebook's call, with widths 128/64 instead of 512/256 to keep the test short.
    monkeypatch.chdir(tmp_path)
    data = small_data
    model = CaptioningRNN(cell_type=cell_type, word_to_idx=data["word_to_idx"],
                          input_dim=data["train_features"].shape[1], hidden_dim=128, wordvec_dim=64)
    solver = CaptioningSolver(model, small_data, update_rule="adam", num_epochs=50, batch_size=25,
                              optim_config={"learning_rate": 5e-3}, lr_decay=0.95, verbose=True, print_every=10)
    solver.train()
    assert overfits(solver.loss_history, 100, below=0.1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("(Iteration 1 / 100) loss: ") and lines[-1].startswith("(Iteration 91 / 100) loss: ")
    assert len(lines) == 10
    assert solver.solver.updater.optim_state["W_embed"]["learning_rate"] == pytest.approx(5e-3 * 0.95 ** 49)
    assert list(tmp_path.iterdir()) == []  # trained in memory: nothing written
    sampled, true = sampled_and_true(model, small_data)
    assert sampled == true


def test_transformer_notebook_overfits_50_captions(small_data, tmp_path, monkeypatch, capsys):
    # The notebook's call, with wordvec_dim 64 instead of 256 to keep the test short.
    monkeypatch.chdir(tmp_path)
    data = small_data
    torch.manual_seed(231)
    transformer = CaptioningTransformer(word_to_idx=data["word_to_idx"], input_dim=data["train_features"].shape[1],
                                        wordvec_dim=64, num_heads=2, num_layers=2, max_length=30)
    solver = CaptioningSolverTransformer(transformer, small_data, idx_to_word=data["idx_to_word"], num_epochs=100,
                                         batch_size=25, learning_rate=0.001, verbose=True, print_every=10)
    solver.train()
    assert overfits(solver.loss_history, 200, below=0.1)
    assert len(capsys.readouterr().out.splitlines()) == 20
    assert list(tmp_path.iterdir()) == []
    sampled, true = sampled_and_true(transformer, small_data, max_length=30)
    assert sampled == true


def test_solver_options_reach_the_update_rule(small_data):
    model = CaptioningRNN(small_data["word_to_idx"], input_dim=small_data["train_features"].shape[1], hidden_dim=8,
                          wordvec_dim=4)
    solver = CaptioningSolver(model, small_data, update_rule="sgd_momentum", num_epochs=1, batch_size=50,
                              optim_config={"learning_rate": 1e-2, "momentum": 0.5}, verbose=False)
    solver.train()
    state = solver.solver.updater.optim_state["Wx"]
    assert (state["momentum"], state["learning_rate"]) == (0.5, 1e-2)
    default_rate = CaptioningSolver(model, small_data, update_rule="rmsprop")
    assert default_rate.solver.updater.optim_config.lr == 1e-2  # the rule's own default, as CS231n's rules have


def test_the_rate_is_not_a_rule_option(small_data):
    model = CaptioningRNN(small_data["word_to_idx"], input_dim=small_data["train_features"].shape[1], hidden_dim=8,
                          wordvec_dim=4)
    with pytest.raises(ValueError, match="OptimConfig.lr"):
        NumpyUpdater(model, OptimConfig(rule_options={"learning_rate": 1e-3}))


@pytest.mark.parametrize("options, match", [
    ({"learning_rate": 1e-3}, "unrecognized arguments \\['learning_rate'\\]"),
    ({"update_rule": "adagrad"}, "unknown update rule 'adagrad'"),
    ({"optim_config": {"beta3": 0.9}}, "unknown optimizer options \\['beta3'\\]"),
    ({"optim_config": {"t": 5}}, "\\['t'\\] is adam's running state"),
])
def test_bad_solver_arguments_are_refused(small_data, options, match):
    model = CaptioningRNN(small_data["word_to_idx"], input_dim=small_data["train_features"].shape[1], hidden_dim=8,
                          wordvec_dim=4)
    with pytest.raises(ValueError, match=match):
        CaptioningSolver(model, small_data, **{"update_rule": "adam", **options})
