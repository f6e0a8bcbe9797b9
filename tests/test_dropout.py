"""core.layers.dropout: the drop rate, exact expectation, gradients (float64 gradcheck), and the fused ReLU."""
import pytest
import torch

from core.layers.dropout import Dropout, drop_mask, drop_probability, dropout, relu_dropout


def test_drop_probability_is_p_on_a_2_16_grid():
    assert drop_probability(0.1) == 6554 / 65536
    assert drop_probability(0.5) == 0.5 and drop_probability(0.0) == 0.0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_and_expectation(p):
    torch.manual_seed(0)
    n = 1 << 20
    rate = drop_mask((n,), p, "cpu").double().mean().item()
    assert abs(rate - drop_probability(p)) < 4 * (p * (1 - p) / n) ** 0.5  # 4 standard deviations
    out = dropout(torch.ones(n, dtype=torch.float64), p)
    assert abs(out.mean().item() - 1) < 4 * (p / (1 - p) / n) ** 0.5
    assert set(out.unique().tolist()) == {0.0, 1 / (1 - drop_probability(p))}


def test_masks_of_odd_sizes_and_shapes():
    torch.manual_seed(0)
    mask = drop_mask((3, 5, 7), 0.5, "cpu")
    assert mask.shape == (3, 5, 7) and mask.dtype == torch.bool and 0 < mask.sum() < 105


@pytest.mark.parametrize("fn", [dropout, relu_dropout])
def test_gradients_match_numeric(fn):
    x = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)

    def seeded(x):
        torch.manual_seed(1)  # the same mask in every call gradcheck makes
        return fn(x, 0.3)

    assert torch.autograd.gradcheck(seeded, (x,))


def test_gradient_flows_only_through_kept_elements():
    torch.manual_seed(0)
    x = (torch.rand(1000, dtype=torch.float64) + 0.5).requires_grad_()  # positive: ReLU passes all
    out = relu_dropout(x, 0.25)
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, (out != 0).double() / (1 - drop_probability(0.25)))


def test_relu_dropout_equals_dropout_of_relu():
    x = torch.randn(50, 40)
    torch.manual_seed(3)
    fused = relu_dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(fused, dropout(torch.relu(x), 0.2))


def test_identity_outside_training_and_bad_p():
    x = torch.randn(4, 4)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and torch.equal(relu_dropout(x, 0.5, training=False), torch.relu(x))
    assert dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
