"""Tests of skinjax.losses against optax, scikit-learn and hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.utils.class_weight import compute_class_weight

from skinjax import losses


def _random_batch(seed: int, num_examples: int = 16, num_classes: int = 4):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(scale=3.0, size=(num_examples, num_classes)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, num_classes, num_examples))
    return logits, labels


def _optax_ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_equals_optax(seed):
    logits, labels = _random_batch(seed)
    expected = jnp.mean(_optax_ce(logits, labels))
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)


def test_cross_entropy_under_jit_with_leading_dims():
    logits, labels = _random_batch(0, num_examples=12)
    logits, labels = logits.reshape(3, 4, -1), labels.reshape(3, 4)
    expected = jnp.mean(_optax_ce(logits, labels))
    np.testing.assert_allclose(jax.jit(losses.cross_entropy)(logits, labels), expected, rtol=1e-6)


def test_class_weighted_cross_entropy_is_torch_weighted_mean():
    # Example 0: p = (1/2, 1/2), label 0. Example 1: p = (1/4, 3/4), label 1.
    logits = jnp.array([[0.0, 0.0], [0.0, math.log(3.0)]])
    labels = jnp.array([0, 1])
    loss = losses.cross_entropy(logits, labels, class_weights=jnp.array([1.0, 3.0]))
    expected = (1.0 * math.log(2.0) + 3.0 * -math.log(0.75)) / (1.0 + 3.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_equals_optax_smoothed_labels(smoothing):
    logits, labels = _random_batch(3)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    expected = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    loss = losses.cross_entropy(logits, labels, label_smoothing=smoothing)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize("loss_fn", [losses.cross_entropy, losses.focal_loss])
def test_mask_excludes_padded_rows(loss_fn):
    logits, labels = _random_batch(4)
    mask = jnp.arange(labels.size) < 10
    padded = logits.at[10:].set(100.0 * jnp.arange(logits.shape[-1]))  # garbage rows
    weights = jnp.array([1.0, 2.0, 0.5, 1.5])
    np.testing.assert_allclose(
        loss_fn(padded, labels, class_weights=weights, mask=mask),
        loss_fn(logits[:10], labels[:10], class_weights=weights),
        rtol=1e-6,
    )


@pytest.mark.parametrize("loss_fn", [losses.cross_entropy, losses.focal_loss])
def test_fully_masked_batch_is_zero_with_zero_gradient(loss_fn):
    logits, labels = _random_batch(5)
    mask = jnp.zeros(labels.shape, bool)
    value, grad = jax.value_and_grad(lambda x: loss_fn(x, labels, mask=mask))(logits)
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("loss_fn", [losses.cross_entropy, losses.focal_loss])
def test_bf16_logits_give_float32_loss(loss_fn):
    logits, labels = _random_batch(6)
    low = logits.astype(jnp.bfloat16)
    loss = loss_fn(low, labels)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, loss_fn(low.astype(jnp.float32), labels), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_focal_gamma_zero_is_alpha_weighted_cross_entropy(seed):
    logits, labels = _random_batch(seed)
    alpha = jnp.array([0.1, 0.2, 0.3, 0.4])
    expected = jnp.mean(alpha[labels] * _optax_ce(logits, labels))
    loss = losses.focal_loss(logits, labels, gamma=0.0, alpha=alpha)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_focal_gamma_zero_with_class_weights_is_cross_entropy():
    logits, labels = _random_batch(7)
    weights = jnp.array([1.0, 2.0, 0.5, 1.5])
    np.testing.assert_allclose(
        losses.focal_loss(logits, labels, gamma=0.0, class_weights=weights),
        losses.cross_entropy(logits, labels, class_weights=weights),
        rtol=1e-6,
    )


def test_focal_scalar_alpha_weights_positive_class_by_alpha():
    logits, labels = _random_batch(8, num_classes=2)
    expected = jnp.mean(jnp.where(labels == 1, 0.25, 0.75) * _optax_ce(logits, labels))
    loss = losses.focal_loss(logits, labels, gamma=0.0, alpha=0.25)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_focal_gamma_two_hand_computed():
    # p = (1/4, 3/4) for both examples; labels 1 (p_y = 3/4) and 0 (p_y = 1/4).
    logits = jnp.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    labels = jnp.array([1, 0])
    loss = losses.focal_loss(logits, labels, gamma=2.0, alpha=0.25)
    positive = 0.25 * (1 - 0.75) ** 2 * -math.log(0.75)
    negative = 0.75 * (1 - 0.25) ** 2 * -math.log(0.25)
    np.testing.assert_allclose(loss, (positive + negative) / 2, rtol=1e-6)


def test_focal_gradient_finite_for_certain_predictions():
    logits = jnp.array([[0.0, 200.0], [-50.0, 50.0]])
    grad = jax.grad(lambda x: losses.focal_loss(x, jnp.array([1, 0])))(logits)
    assert np.all(np.isfinite(grad))


def test_focal_scalar_alpha_needs_two_classes():
    logits, labels = _random_batch(9)
    with pytest.raises(ValueError, match="binary convention"):
        losses.focal_loss(logits, labels, alpha=0.25)


def test_inverse_class_weights_equal_sklearn_balanced():
    counts = np.array([50, 5, 20])
    labels = np.repeat(np.arange(3), counts)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(losses.class_weights_from_counts(counts), expected, rtol=1e-6)


def test_sqrt_inverse_class_weights_hand_computed():
    # w ~ (1, 1/2); sum_c n_c w_c = 1 + 2 = 3 must equal N = 5, so w = (5/3, 5/6).
    weights = losses.class_weights_from_counts([1, 4], kind="sqrt_inverse")
    np.testing.assert_allclose(weights, [5 / 3, 5 / 6], rtol=1e-6)


@pytest.mark.parametrize("kind", ["inverse", "sqrt_inverse"])
def test_class_weights_average_one_over_examples(kind):
    counts = np.array([700, 90, 30, 5])
    weights = losses.class_weights_from_counts(counts, kind=kind)
    np.testing.assert_allclose(np.dot(weights, counts) / counts.sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("counts", "kind"), [([3, 0], "inverse"), ([3, 4], "log")])
def test_class_weights_reject_bad_input(counts, kind):
    with pytest.raises(ValueError):
        losses.class_weights_from_counts(counts, kind=kind)


def test_lsgan_loss_hand_computed():
    predictions = jnp.array([[0.5, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(losses.lsgan_loss(predictions, True), (0.25 + 0 + 1 + 1) / 4)
    np.testing.assert_allclose(losses.lsgan_loss(predictions, False), (0.25 + 1 + 0 + 4) / 4)


def test_l1_loss_hand_computed():
    a = jnp.array([1.0, 2.0, 3.0], jnp.bfloat16)
    loss = losses.l1_loss(a, jnp.array([2.0, 2.0, 5.0]))
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, 1.0)
