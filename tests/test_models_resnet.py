"""ResNet: feature shapes, parameter counts, dtypes and BatchNorm behaviour.

Parity with torchvision is tested in test_weights.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax import models


def _images(batch: int = 2, size: int = 64) -> jax.Array:
    return jax.random.normal(jax.random.key(0), (batch, size, size, 3))


@pytest.fixture(scope="module")
def tiny_resnet18() -> nnx.Module:
    return models.build("resnet18", 2, width=8)


@pytest.mark.parametrize(("name", "expansion"), [("resnet18", 1), ("resnet50", 4)])
def test_feature_shapes(name, expansion):
    model = nnx.eval_shape(lambda: models.build(name, 3, width=8))
    features, logits = nnx.eval_shape(lambda m, x: (m.features(x), m(x)), model, _images())
    assert {k: v.shape for k, v in features.items()} == {
        "stage1": (2, 16, 16, 8),
        "stage2": (2, 16, 16, 8 * expansion),
        "stage3": (2, 8, 8, 16 * expansion),
        "stage4": (2, 4, 4, 32 * expansion),
        "stage5": (2, 2, 2, 64 * expansion),
    }
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32


def test_call_is_classify_of_features(tiny_resnet18):
    model = tiny_resnet18
    model.eval()
    assert model.cam_layers[0] == "stage5"
    both = nnx.jit(lambda m, x: (m(x), m.classify(m.features(x))))
    logits, from_features = both(model, _images())
    np.testing.assert_allclose(logits, from_features, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "count"),
    [  # torchvision's counts, 1000 classes (101 and 152 differ only in the stage table).
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
    ],
)
def test_parameter_count_matches_torchvision(name, count):
    model = nnx.eval_shape(lambda: models.build(name, 1000))
    params = nnx.state(model, nnx.Param)
    assert sum(p.size for p in jax.tree.leaves(params)) == count


def test_bfloat16_compute_keeps_float32_params_stats_and_logits():
    model = models.build("resnet18", 2, width=8, dtype=jnp.bfloat16)
    features, logits = nnx.jit(lambda m, x: (m.features(x), m(x)))(model, _images())
    assert features["stage5"].dtype == jnp.bfloat16
    assert logits.dtype == jnp.float32
    dtypes = {v.dtype for v in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_batch_norm_running_average_follows_torch_momentum(tiny_resnet18):
    """torch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic."""
    model = tiny_resnet18
    model.train()
    x = _images()
    batch_mean = model.backbone.stem.conv(x).mean(axis=(0, 1, 2))
    nnx.jit(lambda m, x: m(x))(model, x)
    model.eval()
    np.testing.assert_allclose(model.backbone.stem.norm.mean[...], 0.1 * batch_mean, atol=1e-6)


def test_eval_mode_treats_images_independently(tiny_resnet18):
    """Running statistics, not the batch's: reordering the batch reorders the logits."""
    model = tiny_resnet18
    model.eval()
    x = _images(batch=4)
    forward = nnx.jit(lambda m, x: m(x))
    np.testing.assert_allclose(forward(model, x)[::-1], forward(model, x[::-1]), atol=1e-5)


def test_bn_axis_name_computes_statistics_over_all_shards():
    """Two shards of two images, synchronised, behave like one batch of four."""
    x = _images(batch=4)
    whole = models.build("resnet18", 2, width=8)
    whole.train()
    expected = nnx.jit(lambda m, x: m(x))(whole, x)

    sharded = models.build("resnet18", 2, width=8, bn_axis_name="shards")
    sharded.train()
    graphdef, state = nnx.split(sharded)

    def forward(state, x):
        model = nnx.merge(graphdef, state)
        return model(x), nnx.state(model, nnx.BatchStat)

    shards = jax.vmap(forward, in_axes=(None, 0), out_axes=(0, None), axis_name="shards")
    logits, stats = jax.jit(shards)(state, x.reshape(2, 2, *x.shape[1:]))
    np.testing.assert_allclose(logits.reshape(expected.shape), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        stats["backbone"]["stem"]["norm"]["mean"][...],
        whole.backbone.stem.norm.mean[...],
        rtol=1e-5,
        atol=1e-6,
    )
