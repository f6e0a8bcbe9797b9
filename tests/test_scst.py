"""Self-critical sequence training: advantages, the policy-gradient loss of the numpy models (numeric gradients,
torch autograd), rewards with <END>, document-frequency cache, and whole runs (reward rises, exact resume)."""
import json
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.decoding import sample_decode
from core.evaluation.cider import CiderD, DocumentFrequency
from core.model.rnn_model import CaptioningRNN
from core.model.transformer import CaptioningTransformer
from core.model.transformer_config import TransformerConfig
from core.runtime.checkpoint import load_training_state
from core.training import scst
from core.training.engine import TrainSettings, run_training
from tests.gradcheck import numeric_gradient, rel_error
from tests.test_rnn_model import make_captions, make_vocab

SMALL = {"rnn": {"wordvec_dim": 8, "hidden_dim": 16}, "lstm": {"wordvec_dim": 8, "hidden_dim": 16},
         "transformer": {"wordvec_dim": 16, "num_heads": 2, "num_layers": 1, "dim_feedforward": 32}}


def test_mean_and_greedy_baselines_give_the_hand_computed_advantages():
    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # Mean of the others: row 0 baselines (2+3)/2, (1+3)/2, (1+2)/2; row 1: 3, 3, 0.
    np.testing.assert_allclose(scst.advantages(rewards), [[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]])
    np.testing.assert_allclose(scst.advantages(rewards, np.array([2.0, 1.0])), [[-1, 0, 1], [-1, -1, 5]])


def test_reference_sets_group_each_images_captions():
    captions = np.arange(5 * 3).reshape(5, 3) + 10
    images, refs = scst.reference_sets(captions, np.array([7, 2, 7, 7, 2]), null_idx=0)
    np.testing.assert_array_equal(images, [2, 7])
    np.testing.assert_array_equal(refs[0], [captions[1], captions[4], [0, 0, 0]])
    np.testing.assert_array_equal(refs[1], [captions[0], captions[2], captions[3]])


def test_rewards_count_end_and_drop_start_and_padding():
    rows = np.array([[1, 5, 6, 2, 0], [5, 6, 0, 0, 0]])
    words = scst.caption_words(rows, start_idx=1, null_idx=0)
    assert [w.tolist() for w in words] == [[5, 6, 2], [5, 6]]
    # With <END> a word, a caption that stops where the references stop beats the same words cut off.
    references = [[np.array([5, 6, 2]), np.array([5, 6, 7, 2])]]
    cider = CiderD(document_frequency=DocumentFrequency(references + [[np.array([8, 9, 2])]]))
    ended, cut = cider.score(words, [0, 0], references)
    assert ended > cut


def weighted_model(cell_type, seed=3):
    model = CaptioningRNN(make_vocab(4), input_dim=5, wordvec_dim=4, hidden_dim=6, cell_type=cell_type,
                          dtype=np.float64, seed=seed)
    model.params["W_embed"] = np.random.default_rng(seed).standard_normal(model.params["W_embed"].shape)
    return model


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_policy_gradient_matches_numeric(cell_type):
    rng = np.random.default_rng(1)
    model = weighted_model(cell_type)
    features, captions = rng.standard_normal((4, 5)), make_captions(rng, 4, 6, 8, min_words=1)
    weights = np.array([1.5, -0.7, 0.0, 2.0])
    _, grads = model.loss(features, captions, weights=weights)
    for name, param in model.params.items():
        numeric = numeric_gradient(lambda: model.loss(features, captions, weights=weights)[0], param)
        assert rel_error(grads[name], numeric) < 1e-6, name


def torch_surrogate(params, features, captions, weights, cell_type):
    """-sum_n weights[n] * log p(caption n) / N, the captioning RNN's equations written in torch autograd."""
    p = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    x = torch.tensor(features)
    h = x @ p["W_proj"] + p["b_proj"]  # (N, I) @ (I, H) -> (N, H)
    c = torch.zeros_like(h)
    H, total = h.shape[1], 0
    for t in range(captions.shape[1] - 1):
        a = p["W_embed"][captions[:, t]] @ p["Wx"] + h @ p["Wh"] + p["b"]  # (N, G)
        if cell_type == "lstm":
            i, f, o = (torch.sigmoid(a[:, k * H:(k + 1) * H]) for k in range(3))
            c = f * c + i * torch.tanh(a[:, 3 * H:])
            h = o * torch.tanh(c)
        else:
            h = torch.tanh(a)
        log_probs = torch.log_softmax(h @ p["W_vocab"] + p["b_vocab"], dim=1)  # (N, H) @ (H, V) -> (N, V)
        target = torch.tensor(captions[:, t + 1], dtype=torch.long)
        picked = log_probs[torch.arange(len(target)), target] * torch.tensor(captions[:, t + 1] != 0)
        total = total - (torch.tensor(weights) * picked).sum()
    loss = total / len(features)
    loss.backward()
    return float(loss), {name: t.grad.numpy() for name, t in p.items()}


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_policy_gradient_equals_torch_autograd(cell_type):
    rng = np.random.default_rng(2)
    model = weighted_model(cell_type)
    features, captions = rng.standard_normal((5, 5)), make_captions(rng, 5, 7, 8, min_words=1)
    weights = rng.standard_normal(5)
    loss, grads = model.loss(features, captions, weights=weights)
    torch_loss, torch_grads = torch_surrogate(model.params, features, captions, weights, cell_type)
    assert abs(loss - torch_loss) < 1e-10
    for name in model.params:
        np.testing.assert_allclose(grads[name], torch_grads[name], rtol=0, atol=1e-10, err_msg=name)


def test_a_caption_with_zero_advantage_contributes_nothing():
    rng = np.random.default_rng(4)
    model = weighted_model("lstm")
    features, captions = rng.standard_normal((3, 5)), make_captions(rng, 3, 6, 8)
    _, both = model.loss(features, captions, weights=np.array([0.8, 0.0, -1.2]))
    kept = [0, 2]
    # Alone, the two kept captions are averaged over 2 rows, not 3: rescale to compare.
    _, alone = model.loss(features[kept], captions[kept], weights=np.array([0.8, -1.2]) * 2 / 3)
    for name in both:
        np.testing.assert_allclose(both[name], alone[name], rtol=1e-10, atol=1e-12, err_msg=name)


def sampled_log_probabilities(model, features, max_length=6):
    """Sampled captions with <START> (N, 1 + L), and each one's log-probability summed from the decoding steps."""
    samples = sample_decode(model, features, max_length, rng=np.random.default_rng(0))
    captions = np.concatenate([np.full((len(features), 1), model.start_idx), samples], axis=1)
    log_p = np.zeros(len(features))
    state, tokens = model.init_decode(features), captions[:, 0]
    for t in range(samples.shape[1]):
        log_probs, state = model.decode_step(tokens, state)
        tokens = captions[:, t + 1]
        log_p += np.where(tokens != model.null_idx, log_probs[np.arange(len(tokens)), tokens], 0.0)
    return captions, log_p


def test_surrogate_is_the_sampled_words_log_probabilities():
    """The weighted loss of sampled captions equals -sum advantage * log p(sample) / N summed from the decoding
    steps' own log-probabilities: what the sampler drew is what the gradient is for."""
    model = weighted_model("lstm")
    features = np.random.default_rng(5).standard_normal((4, 5))
    captions, log_p = sampled_log_probabilities(model, features)
    weights = np.array([0.5, -1.0, 2.0, 0.3])
    loss, _ = model.loss(features, captions, weights=weights)
    assert abs(loss - (-(weights * log_p).sum() / 4)) < 1e-10


def test_transformer_surrogate_is_the_sampled_words_log_probabilities():
    torch.manual_seed(0)
    config = TransformerConfig(input_dim=5, wordvec_dim=16, num_heads=2, num_layers=1, dim_feedforward=32,
                               dropout=0.0)
    model = CaptioningTransformer(make_vocab(4), config).double().eval()
    features = np.random.default_rng(5).standard_normal((4, 5))
    captions, log_p = sampled_log_probabilities(model, features)
    weights = np.array([0.5, -1.0, 2.0, 0.3])
    loss = model.loss(torch.tensor(features), torch.tensor(captions), weights=torch.tensor(weights))
    assert abs(float(loss) - (-(weights * log_p).sum() / 4)) < 1e-5  # the loss sums in float32


def test_training_document_frequency_is_cached_and_recounted_for_other_captions(tmp_path):
    refs = np.array([[[1, 5, 6, 2], [1, 5, 2, 0]], [[1, 7, 2, 0], [0, 0, 0, 0]]])
    df = scst.training_document_frequency(tmp_path, refs, start_idx=1, null_idx=0)
    assert df.num_documents == 2 and df.counts(1) == {(2,): 2, (5,): 1, (6,): 1, (7,): 1}
    cached = scst.training_document_frequency(tmp_path, refs, start_idx=1, null_idx=0)
    assert cached.counts(2) == df.counts(2) and cached.num_documents == 2
    other = scst.training_document_frequency(tmp_path, refs[:1], start_idx=1, null_idx=0)
    assert other.num_documents == 1


def xe_checkpoint(model, data_dir, out, epochs=10):
    """A briefly trained cross-entropy model (3 steps an epoch) to start self-critical runs from."""
    run_training(TrainSettings(model=model, data_dir=str(data_dir), out=str(out), epochs=epochs, progress=False,
                               batch_size=16, lr=1e-2, min_steps=1, model_config=SMALL[model]))
    return out / ("best.pt" if model == "transformer" else "best.npz")


def scst_settings(model, data_dir, init, out, **options):
    values = dict(model=model, data_dir=str(data_dir), out=str(out), objective="scst", init_from=str(init),
                  epochs=8, batch_size=8, lr=3e-2, progress=False, min_steps=1)
    return TrainSettings(**dict(values, **options))


@pytest.mark.parametrize("model", ["rnn", "lstm", "transformer"])
def test_scst_raises_the_training_cider(model, tiny_dataset, tmp_path):
    init = xe_checkpoint(model, tiny_dataset, tmp_path / "xe")
    summary = run_training(scst_settings(model, tiny_dataset, init, tmp_path / "scst", epochs=12))
    history = json.loads((tmp_path / "scst" / "history.json").read_text())
    assert history["metric"] == "CIDEr-D" and history["metric_sign"] == -1
    rewards = -np.array(history["epoch_train_loss"])  # mean CIDEr-D of the samples, epoch by epoch
    assert rewards[-3:].mean() > rewards[:3].mean() + 1.0, rewards
    assert summary["metric"].name == "CIDEr-D" and (tmp_path / "scst" / "loss.png").is_file()


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_an_interrupted_scst_run_resumes_exactly(baseline, tiny_dataset, tmp_path, monkeypatch):
    init = xe_checkpoint("lstm", tiny_dataset, tmp_path / "xe")
    straight = scst_settings("lstm", tiny_dataset, init, tmp_path / "straight", epochs=3, scst_baseline=baseline)
    run_training(straight)
    step = scst.SCSTUpdater.train_step
    calls = []

    def interrupt_after_four(self, *args):
        loss = step(self, *args)
        calls.append(1)
        if len(calls) == 4:  # mid second epoch (3 steps an epoch): as if Ctrl-C was pressed
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(scst.SCSTUpdater, "train_step", interrupt_after_four)
    resumed = scst_settings("lstm", tiny_dataset, init, tmp_path / "resumed", epochs=3, scst_baseline=baseline)
    with pytest.raises(KeyboardInterrupt):
        run_training(resumed)
    monkeypatch.setattr(scst.SCSTUpdater, "train_step", step)
    run_training(replace(resumed, resume=True))
    a, b = (load_training_state(tmp_path / name / "last.npz") for name in ("straight", "resumed"))
    for key in ("train_loss", "epoch_train_loss", "epoch_val_loss"):
        assert a[0]["run"]["history"][key] == b[0]["run"]["history"][key], key
    for name in a[1]["params"]:
        np.testing.assert_array_equal(a[1]["params"][name], b[1]["params"][name], err_msg=name)
