"""CycleGAN: networks, losses, the image pool, the train step, exact resume, synthesis."""

import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import synthetic_folder
from flax import nnx
from PIL import Image

from configs import cyclegan as cyclegan_config
from skinjax import losses, parallel
from skinjax.apps import synthesis
from skinjax.data import augment, prepare, sources
from skinjax.models import cyclegan as models
from skinjax.train import cyclegan, cyclegan_trainer

TINY = dict(generator_width=4, discriminator_width=4)


# --- networks -------------------------------------------------------------------------


@pytest.mark.parametrize("generator", ["resnet_9blocks", "unet"])
def test_generators_keep_the_image_shape_in_tanh_range(generator):
    model = models.CycleGAN(generator, rngs=nnx.Rngs(0), **TINY)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 48, 3), minval=-1, maxval=1)
    for net in (model.g_ab, model.g_ba):
        y = net(x)
        assert y.shape == x.shape and y.dtype == jnp.float32
        assert jnp.all(jnp.abs(y) <= 1)


def test_reference_widths_match_the_reference_parameter_counts():
    model = models.CycleGAN("resnet_9blocks", rngs=nnx.Rngs(0))
    count = lambda net: sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
    # pytorch-CycleGAN-and-pix2pix prints 11.378 M (G_A) and 2.765 M (D_A).
    assert count(model.g_ab) == 11_378_179
    assert count(model.d_a) == 2_764_737


@pytest.mark.parametrize("size, out", [(64, 6), (128, 14)])
def test_discriminator_scores_one_value_per_patch(size, out):
    net = models.PatchDiscriminator(4, rngs=nnx.Rngs(0))
    scores = net(jnp.zeros((2, size, size, 3)))
    assert scores.shape == (2, out, out, 1) and scores.dtype == jnp.float32


def test_patchgan_receptive_field_is_70_pixels(monkeypatch):
    # Instance norm pools its statistics over the whole image by design; with them held
    # fixed, each score depends on exactly a 70x70 patch of the input.
    def fixed_statistics(x, epsilon=1e-5):
        mean = jax.lax.stop_gradient(jnp.mean(x, axis=(1, 2), keepdims=True))
        var = jax.lax.stop_gradient(jnp.var(x, axis=(1, 2), keepdims=True))
        return (x - mean) * jax.lax.rsqrt(var + epsilon)

    monkeypatch.setattr(models, "instance_norm", fixed_statistics)
    net = models.PatchDiscriminator(4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (1, 160, 160, 3))
    grad = jax.grad(lambda x: net(x)[0, 8, 8, 0])(x)
    seen = np.abs(np.asarray(grad[0])).sum(-1) > 0
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (41, 110, 41, 110)  # 8 * 8 - 23 .. + 46
    assert seen.sum() == 70 * 70


# --- losses --------------------------------------------------------------------------


def test_lsgan_and_l1_by_hand():
    scores = jnp.array([0.5, 2.0])
    assert losses.lsgan_loss(scores, True) == pytest.approx((0.25 + 1.0) / 2)
    assert losses.lsgan_loss(scores, False) == pytest.approx((0.25 + 4.0) / 2)
    assert losses.l1_loss(jnp.array([1.0, -1.0]), jnp.array([0.5, 1.0])) == pytest.approx(1.25)


def test_discriminator_loss_is_halved():
    real, fake = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    assert cyclegan.discriminator_loss(real, fake) == pytest.approx(0.5 * (0.5 + 0.5))
    assert cyclegan.discriminator_loss(jnp.ones(3), jnp.zeros(3)) == 0.0


def test_generator_losses_by_hand():
    nets = types.SimpleNamespace(
        g_ab=lambda x: x + 0.5, g_ba=lambda x: x - 0.25, d_a=lambda x: x, d_b=lambda x: x
    )
    zeros = jnp.zeros((1, 2, 2, 3))
    terms, (fake_a, fake_b) = cyclegan.generator_losses(nets, zeros, zeros, identity=True)
    np.testing.assert_allclose(fake_a, -0.25)
    np.testing.assert_allclose(fake_b, 0.5)
    expected = {
        "adversarial": (0.5 - 1) ** 2 + (-0.25 - 1) ** 2,  # d_b(fake_b), d_a(fake_a) vs 1
        "cycle": 0.25 + 0.25,  # g_ba(0.5) = 0.25 and g_ab(-0.25) = 0.25, vs 0
        "identity": 0.5 + 0.25,  # g_ab(0) = 0.5 and g_ba(0) = -0.25, vs 0
    }
    assert {k: float(v) for k, v in terms.items()} == pytest.approx(expected)
    total = cyclegan.generator_total(terms, cycle_weight=10.0, identity_weight=5.0)
    assert total == pytest.approx(1.8125 + 10 * 0.5 + 5 * 0.75)
    terms, _ = cyclegan.generator_losses(nets, zeros, zeros, identity=False)
    assert "identity" not in terms


# --- image pool ----------------------------------------------------------------------


def test_pool_fills_first_then_returns_a_stored_image_half_the_time():
    query = jax.jit(cyclegan.query_pool)
    pool = cyclegan.empty_pool(4, (1, 1, 1))
    first = jnp.arange(3.0).reshape(3, 1, 1, 1)
    pool, out = query(pool, first, jax.random.key(0))
    np.testing.assert_array_equal(out, first)  # filling: every image comes back
    assert int(pool.count) == 3
    new = 100.0 + jnp.arange(2001.0).reshape(-1, 1, 1, 1)
    pool, out = query(pool, new, jax.random.key(1))
    new, out = np.asarray(new).ravel(), np.asarray(out).ravel()
    assert out[0] == new[0]  # the fourth slot fills
    stored = out[1:] != new[1:]
    assert abs(stored.mean() - 0.5) < 0.04  # 2,000 draws: 4.5 standard deviations
    # Replaying the draws: a stored image comes from the pool and leaves it for the new one.
    contents = {0.0, 1.0, 2.0, new[0]}
    for image, given in zip(out[1:], new[1:], strict=True):
        if image != given:
            assert image in contents
            contents = (contents - {image}) | {given}
    assert set(np.asarray(pool.images).ravel()) == contents


def test_no_pool_returns_the_images_and_checkpoints(tmp_path):
    images = jnp.ones((2, 4, 4, 3))
    pool, out = cyclegan.query_pool(cyclegan.empty_pool(0, (4, 4, 3)), images, jax.random.key(0))
    assert pool is None and out is images
    # MelaNet has no pool: its state must still save and restore (no zero-size arrays).
    model = models.CycleGAN("unet", rngs=nnx.Rngs(0), **TINY)
    tx = optax.adam(1e-3)
    step = cyclegan.StepSetup(nnx.graphdef(model), tx, tx, augment.Augment())
    state = cyclegan.create_train_state(model, step, pool_size=0, image_size=16, seed=0)
    manager = ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(create=True))
    manager.save(0, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    restored = manager.restore(0, args=ocp.args.StandardRestore(state))
    assert restored.pool_a is None and restored.pool_b is None
    jax.tree.map(np.testing.assert_array_equal, restored, state)


# --- train step ------------------------------------------------------------------------


def test_jitted_step_lowers_generator_and_discriminator_losses():
    model = models.CycleGAN("unet", rngs=nnx.Rngs(0), **TINY)
    tx = optax.adam(2e-3, b1=0.5)
    step = cyclegan.StepSetup(nnx.graphdef(model), tx, tx, augment.Augment())  # a fixed batch
    state = cyclegan.create_train_state(model, step, pool_size=2, image_size=32, seed=0)
    placement = parallel.Placement("mesh")
    train_fn = cyclegan.compile_step(step, placement)
    rng = np.random.default_rng(0)
    smooth = lambda: np.repeat(np.repeat(rng.integers(0, 256, (2, 4, 4, 3), np.uint8), 8, 1), 8, 2)
    batch = placement.put_batch({"a": smooth(), "b": smooth()})
    state = placement.put_state(state)
    history = []
    for _ in range(12):
        state, metrics = train_fn(state, batch)
        values = {k: float(v.compute()) for k, v in metrics.items()}
        history.append((values["g_total"], values["d_a"] + values["d_b"]))
    (g_first, d_first), (g_last, d_last) = history[0], np.mean(history[-3:], axis=0)
    assert g_last < g_first and d_last < d_first
    assert int(state.step) == 12 and int(state.pool_a.count) == 2


def test_pmap_is_refused():
    model = models.CycleGAN("unet", rngs=nnx.Rngs(0), **TINY)
    sgd = optax.sgd(1.0)
    step = cyclegan.StepSetup(nnx.graphdef(model), sgd, sgd, augment.Augment())
    with pytest.raises(ValueError, match="mesh"):
        cyclegan.compile_step(step, parallel.Placement("pmap"))


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    schedule = cyclegan.learning_rate(2e-4, total_steps=10, decay_steps=4)
    rates = [float(schedule(s)) for s in range(11)]
    np.testing.assert_allclose(rates[:7], 2e-4)
    np.testing.assert_allclose(rates[6:], [2e-4, 1.5e-4, 1e-4, 0.5e-4, 0.0], atol=1e-12)


# --- training, resume and synthesis on synthetic images----------------------------------


def _tiny_config(data_dir):
    """Four steps of batch 2 at 32 px (9 train, 3 val images per class), pool of 2."""
    config = cyclegan_config.get_config()
    config.model.update(generator="unet", **TINY)
    config.data.update(dir=str(data_dir), image_size=32, val_fraction=0.25)
    config.optim.decay_epochs = 0.5
    config.train.update(
        batch_size=2,
        num_epochs=1.0,
        pool_size=2,
        log_every_steps=1,
        sample_every_steps=2,
        checkpoint_every_steps=2,
        keep_checkpoints=10,
        num_samples=2,
    )
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_folder(tmp_path_factory.mktemp("data") / "small")


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cyclegan")
    cyclegan_trainer.train_and_evaluate(_tiny_config(data_dir), str(workdir))
    return workdir


def _state(workdir):
    step = ocp.CheckpointManager(f"{workdir}/checkpoints").latest_step()
    return step, ocp.StandardCheckpointer().restore(f"{workdir}/checkpoints/{step}/state")


def test_resume_is_exact(trained, data_dir, tmp_path):
    step, expected = _state(trained)
    assert step == 4
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")  # as if killed after step 2
    cyclegan_trainer.train_and_evaluate(_tiny_config(data_dir), str(resumed))
    step, state = _state(resumed)
    assert step == 4 and state["pool_a"]["count"] == 2
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state, expected)


def test_sample_grids_show_input_translation_reconstruction(trained):
    for step in (2, 4):
        with Image.open(trained / "samples" / f"{step:08d}.png") as grid:
            assert grid.size == (6 * 32, 2 * 32)  # A, A->B, A->B->A, B, B->A, B->A->B


def test_synthesize_a_class_writes_collections_the_data_layer_reads(trained, tmp_path):
    out = tmp_path / "synth"
    written = synthesis.synthesize(str(trained), str(out), input_class="benign", batch_size=4)
    assert [os.path.basename(p) for p in written] == ["labels.csv", "real.csv", "combined.csv"]
    csv = dict(
        classes=("benign", "malignant"),
        id_column="id",
        label_column="label",
        path_column="path",
        split_column="split",
    )
    synthetic = sources.from_csv(str(out), "labels.csv", **csv)
    assert len(synthetic) == 9 and set(synthetic.labels) == {1}  # 9 benign -> malignant
    with Image.open(synthetic.paths[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    data = dict(source="csv", dir=str(out), **csv)
    real = prepare.prepare({**data, "csv": "real.csv"}).parts
    combined = prepare.prepare({**data, "csv": "combined.csv"}).parts
    assert combined["val"] == real["val"]  # validated on the same real images
    assert len(combined["train"]) == len(real["train"]) + 9 == 27


def test_synthesize_a_folder(trained, data_dir, tmp_path):
    out = tmp_path / "synth"
    synthesis.synthesize(
        str(trained), str(out), input_dir=str(data_dir / "malignant"), direction="ba"
    )
    collection = sources.from_csv(
        str(out),
        "labels.csv",
        classes=("benign",),
        id_column="id",
        label_column="label",
        path_column="path",
    )
    assert len(collection) == 12
