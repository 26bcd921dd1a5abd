"""FLOP figures count all the work, whether oneDNN's kernels or XLA's run."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from skinjax import models
from skinjax.kernels import flops, onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="oneDNN kernels not built")


@pytest.fixture(scope="module")
def forward():
    model = models.build("resnet18", 2, width=8)
    model.eval()
    graph, state = nnx.split(model)
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return model, (lambda state, x: nnx.merge(graph, state)(x)), state, image


def test_the_count_is_the_same_with_and_without_onednn(forward):
    model, fn, state, image = forward
    counted = flops.count(fn, state, image)
    with onednn.disabled():
        xla_kernels = jax.jit(lambda s, x: fn(s, x)).lower(state, image).cost_analysis()["flops"]
    custom_calls = jax.jit(fn).lower(state, image).cost_analysis()["flops"]
    assert counted == xla_kernels
    assert custom_calls < 0.5 * counted  # what XLA's cost analysis saw of the oneDNN trace
    # The figure of scripts/summary.py and the model card, whichever kernels are on.
    on = flops.forward(model, 32)
    with onednn.disabled():
        off = flops.forward(model, 32)
    assert on == off == counted


def test_a_cached_onednn_trace_is_refused(forward):
    _, fn, state, image = forward
    jitted = jax.jit(fn)
    jitted.lower(state, image)  # traced with oneDNN's kernels; the trace is cached
    with pytest.raises(RuntimeError, match="would miss oneDNN's kernels"):
        flops.count(jitted, state, image)
