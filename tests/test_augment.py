import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skinjax.data import augment
from skinjax.data.augment import Augment


def _images(batch=4, size=16):
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), np.uint8))


def test_identity_affine_returns_the_image():
    images = _images().astype(jnp.float32)
    identity = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1.0, 0]]), (4, 1, 1))
    out = augment.affine_resample(images, identity)
    np.testing.assert_allclose(out, images, atol=1e-4)


def test_flip_through_the_affine_path_equals_array_flip():
    images = _images().astype(jnp.float32)
    hflip = jnp.tile(jnp.array([[1.0, 0, 0], [0, -1.0, 0]]), (4, 1, 1))
    np.testing.assert_allclose(
        augment.affine_resample(images, hflip), images[:, :, ::-1], atol=1e-4
    )


def test_rotation_by_90_degrees_is_exact():
    aug = Augment(rotation=90.0)
    images = _images(batch=1).astype(jnp.float32)
    rot = jnp.array([[[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])  # output (y, x) samples input (x, -y)
    out = augment.affine_resample(images, rot)
    np.testing.assert_allclose(out[0], jnp.rot90(images[0], k=1), atol=1e-4)
    assert aug.resamples


def test_integer_translation_shifts_pixels_and_fills():
    images = _images(batch=1).astype(jnp.float32)
    shift = jnp.array([[[1.0, 0, 0], [0, 1.0, -2 / 16]]])  # sample x - 2: content moves right by 2
    out = augment.affine_resample(images, shift, fill_mode="constant")
    np.testing.assert_allclose(out[0, :, 2:], images[0, :, :-2], atol=1e-4)
    np.testing.assert_allclose(out[0, :, :2], 0.0)
    nearest = augment.affine_resample(images, shift, fill_mode="nearest")
    np.testing.assert_allclose(nearest[0, :, 0], images[0, :, 0], atol=1e-4)


def test_augment_is_per_example_seeded_and_in_range():
    aug = Augment(
        hflip=True,
        vflip=True,
        rotation=30,
        translation=0.1,
        shear=10,
        zoom=0.2,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
    )
    images = jnp.tile(_images(batch=1), (8, 1, 1, 1))
    fn = jax.jit(augment.augment, static_argnums=2)
    a = fn(jax.random.key(0), images, aug)
    b = fn(jax.random.key(0), images, aug)
    c = fn(jax.random.key(1), images, aug)
    assert a.shape == images.shape and a.dtype == jnp.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # The same input image gets different transforms within one batch.
    assert not np.allclose(a[0], a[1])


def test_colour_jitter_keeps_grey_pixels_under_saturation():
    grey = jnp.full((2, 4, 4, 3), 0.5)
    out = augment.colour_jitter(jax.random.key(0), grey, Augment(saturation=0.9))
    np.testing.assert_allclose(out, grey, atol=1e-6)


def test_no_augmentation_is_a_plain_conversion():
    images = _images()
    out = augment.augment(jax.random.key(0), images, Augment())
    np.testing.assert_allclose(out, images / 255.0, atol=1e-6)


def test_normalize_uint8():
    images = jnp.full((1, 2, 2, 3), 255, jnp.uint8)
    out = augment.normalize(images, dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    expected = (1 - np.array(augment.IMAGENET_MEAN)) / np.array(augment.IMAGENET_STD)
    np.testing.assert_allclose(np.asarray(out[0, 0, 0], np.float32), expected, rtol=1e-2)


def test_unknown_fill_mode():
    with pytest.raises(ValueError, match="fill_mode must be one of"):
        Augment(fill_mode="wrap")


def test_closed_form_affine_inverse_matches_numpy():
    rng = np.random.default_rng(0)
    maps = rng.uniform(-2, 2, (64, 2, 3)).astype(np.float32)
    bottom = np.broadcast_to(np.array([0, 0, 1], np.float32), (64, 1, 3))
    expected = np.linalg.inv(np.concatenate([maps, bottom], axis=1))
    np.testing.assert_allclose(
        augment.invert_affine(jnp.asarray(maps)), expected[:, :2], rtol=1e-4, atol=1e-4
    )


def test_random_affine_rotations_are_orthogonal_and_shifts_bounded():
    rotations = augment.random_affine(jax.random.key(3), 16, Augment(rotation=40))
    linear = np.asarray(rotations[:, :, :2], np.float64)
    np.testing.assert_allclose(
        linear @ linear.transpose(0, 2, 1), np.tile(np.eye(2), (16, 1, 1)), atol=1e-6
    )
    np.testing.assert_allclose(rotations[:, :, 2], 0.0)
    shifts = augment.random_affine(jax.random.key(3), 16, Augment(translation=0.2))
    np.testing.assert_allclose(shifts[:, :, :2], np.tile(np.eye(2), (16, 1, 1)))
    assert 0 < np.abs(shifts[:, :, 2]).max() <= 0.2


def test_augmentation_lowers_for_gpus_without_a_solver_call():
    aug = Augment(hflip=True, rotation=30, shear=10, zoom=0.2, translation=0.1)
    fn = jax.jit(augment.augment, static_argnums=2)
    args = (jax.random.key(0), jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.uint8), aug)
    text = jax.export.export(fn, platforms=["cuda"])(*args).mlir_module()
    assert "custom_call" not in text
