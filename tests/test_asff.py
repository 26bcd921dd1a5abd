"""ASFF-ResNet50 in both fusion forms, at 64 px with a tiny width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax import models

WIDTH = 8  # stage4: 4 * 4 * WIDTH = 128 channels, stage5: 256.


def _images() -> jax.Array:
    return jax.random.normal(jax.random.key(0), (2, 64, 64, 3))


@pytest.fixture(scope="module", params=["channel", "spatial"])
def model(request) -> nnx.Module:
    return models.build("asff_resnet50", 2, fusion=request.param, width=WIDTH)


@pytest.fixture(scope="module")
def features(model) -> dict[str, jax.Array]:
    model.eval()
    return nnx.jit(lambda m, x: m.features(x))(model, _images())


def test_fused_map_has_stage4_shape(model, features):
    assert model.cam_layers == ("asff",)
    assert features["asff"].shape == features["stage4"].shape == (2, 4, 4, 16 * WIDTH)


def test_fusion_weights_are_a_softmax(model, features):
    weights = features["asff_weights"]
    if model.fusion.fusion == "channel":  # One weight per channel, softmax over channels.
        assert weights.shape == (2, 1, 1, 16 * WIDTH)
    else:  # One weight per location and branch, softmax over the two branches.
        assert weights.shape == (2, 4, 4, 2)
    assert jnp.all((weights >= 0) & (weights <= 1))
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)


def test_training_gradients_reach_every_head_parameter(model, features):
    """Backward through fusion and head (the backbone's backward is plain ResNet's)."""
    model.train()

    def loss(m, f4, f5):
        fused, _ = m.fusion(f4, f5)
        return jnp.mean(m.classify({"asff": fused}) ** 2)

    grads = nnx.jit(nnx.grad(loss))(model, features["stage4"], features["stage5"])
    head = {path: g[...] for path, g in nnx.to_flat_state(grads) if path[0] != "backbone"}
    assert head and all(jnp.all(jnp.isfinite(g)) and jnp.any(g != 0) for g in head.values())


def test_classify_reads_the_fused_map(model, features):
    """Grad-CAM differentiates the logits with respect to features['asff']."""
    grad = jax.grad(lambda f: model.classify(f)[:, 0].sum())(features)
    assert jnp.any(grad["asff"] != 0)
    assert not jnp.any(grad["stage5"])


def test_unknown_fusion_is_rejected():
    with pytest.raises(ValueError, match="fusion must be 'channel' or 'spatial'"):
        nnx.eval_shape(lambda: models.build("asff_resnet50", 2, fusion="sum", width=WIDTH))
