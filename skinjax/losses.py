"""Losses for the classifiers and for CycleGAN.

Everything here is a pure jax function, safe inside ``jax.jit``. Losses are computed in
float32 whatever the dtype of the logits, so that bf16 compute keeps an f32 loss (see
the precision decision in DESIGN.md). Classification losses take integer labels and
reduce to a scalar mean over the examples that ``mask`` keeps, so that the padded
examples of a last, partial batch do not count.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

ArrayLike = jax.typing.ArrayLike


def _example_weights(
    labels: jax.Array, class_weights: ArrayLike | None, mask: ArrayLike | None
) -> jax.Array:
    """Per-example weights: the weight of the label's class, zero where masked out."""
    weights = jnp.ones(labels.shape, jnp.float32)
    if class_weights is not None:
        weights = weights * jnp.asarray(class_weights, jnp.float32)[labels]
    if mask is not None:
        weights = weights * jnp.asarray(mask, jnp.float32)
    return weights


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w); 0 (with a finite gradient) when every weight is 0."""
    total = jnp.sum(weights)
    return jnp.sum(weights * values) / jnp.where(total > 0, total, 1.0)


def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    label_smoothing: float = 0.0,
    class_weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Softmax cross-entropy, averaged over the examples.

    Args:
      logits: [..., num_classes], any float dtype.
      labels: integer class ids, shape ``logits.shape[:-1]``.
      label_smoothing: mixes the one-hot target with the uniform distribution
        (``optax.smooth_labels``).
      class_weights: [num_classes]. Example i gets weight ``w[labels[i]]`` and the result
        is ``sum_i w_i l_i / sum_i w_i``, as torch's ``CrossEntropyLoss(weight=...)``
        without smoothing. With smoothing the whole smoothed loss of an example is
        weighted by its label's class (torch instead weights each target class's term).
      mask: bool or float per example; zero excludes the example (padding).

    Returns:
      A float32 scalar.
    """
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
    labels = jnp.asarray(labels)
    targets = optax.smooth_labels(
        jax.nn.one_hot(labels, log_probs.shape[-1], dtype=jnp.float32), label_smoothing
    )
    losses = -jnp.sum(targets * log_probs, axis=-1)
    return _weighted_mean(losses, _example_weights(labels, class_weights, mask))


def _alpha_vector(alpha: float | ArrayLike, num_classes: int) -> jax.Array:
    """A per-class alpha; a float follows the binary convention (1 - alpha, alpha)."""
    alpha = jnp.asarray(alpha, jnp.float32)
    if alpha.ndim:
        return alpha
    if num_classes != 2:
        raise ValueError(
            f"a scalar alpha is the binary convention, got {num_classes} classes; "
            "pass one alpha per class instead"
        )
    return jnp.stack([1.0 - alpha, alpha])


def focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: float | ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Softmax focal loss (Lin et al. 2017): ``-alpha_y (1 - p_y)^gamma log p_y``.

    The modulating factor down-weights examples the model already gets right, which
    suits the many easy benign lesions. With ``gamma=0`` it is exactly the alpha-weighted
    cross-entropy.

    Args:
      logits: [..., num_classes], any float dtype.
      labels: integer class ids, shape ``logits.shape[:-1]``.
      gamma: focusing parameter; 0 disables the modulation.
      alpha: a factor per class. A float is the binary convention of Lin et al.:
        ``alpha`` for class 1, ``1 - alpha`` for class 0 (MelaNet: gamma 2, alpha 0.25);
        a vector gives one factor per class. It multiplies the loss and does not
        enter the normaliser, unlike ``class_weights``.
      class_weights: [num_classes], a weighted mean as in ``cross_entropy``.
      mask: bool or float per example; zero excludes the example (padding).

    Returns:
      A float32 scalar.
    """
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
    labels = jnp.asarray(labels)
    log_p = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    losses = -log_p
    # gamma is a static hyperparameter. Skipping the factor at 0 keeps that case exact
    # with a finite gradient where p = 1; -expm1(log p) is 1 - p without cancellation.
    if gamma:
        losses = losses * (-jnp.expm1(log_p)) ** gamma
    if alpha is not None:
        losses = losses * _alpha_vector(alpha, log_probs.shape[-1])[labels]
    return _weighted_mean(losses, _example_weights(labels, class_weights, mask))


def class_weights_from_counts(
    counts: ArrayLike, kind: Literal["inverse", "sqrt_inverse"] = "inverse"
) -> np.ndarray:
    """Class weights proportional to 1/n_c ("inverse") or 1/sqrt(n_c) ("sqrt_inverse").

    Normalised so that the weights average 1 over the examples, ``sum_c n_c w_c = N``:
    the loss keeps its scale, so a learning rate tuned without weights still fits.
    "inverse" then equals scikit-learn's ``compute_class_weight("balanced")``,
    ``N / (num_classes * n_c)``. Host-side numpy, computed once from the training set.

    Raises:
      ValueError: if a count is not positive (that class's weight would be infinite).
    """
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or np.any(counts <= 0):
        raise ValueError(f"counts must be a 1-D array of positive numbers, got {counts}")
    if kind == "inverse":
        weights = 1.0 / counts
    elif kind == "sqrt_inverse":
        weights = 1.0 / np.sqrt(counts)
    else:
        raise ValueError(f"unknown kind {kind!r}; use 'inverse' or 'sqrt_inverse'")
    return (weights * counts.sum() / np.dot(weights, counts)).astype(np.float32)


def lsgan_loss(predictions: ArrayLike, target_is_real: bool) -> jax.Array:
    """Least-squares GAN loss (Mao et al.): mean squared distance to 1 (real) or 0 (fake)."""
    predictions = jnp.asarray(predictions, jnp.float32)
    return jnp.mean(jnp.square(predictions - float(target_is_real)))


def l1_loss(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """Mean absolute difference, the CycleGAN cycle-consistency and identity loss."""
    return jnp.mean(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)))
