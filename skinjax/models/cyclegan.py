"""CycleGAN's networks: ResNet and U-Net generators and the 70x70 PatchGAN discriminator.

Two settings are built from these parts: the reference CycleGAN
(junyanz/pytorch-CycleGAN-and-pix2pix: ResNet-9-block generator, ngf 64) and MelaNet's
(hasibzunair/adversarial-lesions: a four-level U-Net, gf 32). Images are NHWC in
[-1, 1]; generators end in tanh and every output is float32. Instance normalisation
has no learned scale or offset, and weights start from N(0, 0.02) with zero biases, as
in the reference. These are not classifiers, so they are built by `CycleGAN` and not
through the model registry, whose interface (logits, features, backbone) they lack.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
PAD_1 = ((1, 1), (1, 1))
_DRAW = 1 << 16  # normals per random call in `normal_init`


def normal_init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
    """N(0, 0.02), the reference's init, drawn in fixed-size blocks.

    One random kernel then compiles for every parameter shape: drawing each shape
    directly compiles a threefry kernel per shape and made building a CycleGAN take
    20 s instead of 2 (the same fix as `layers.conv_init`).
    """
    size = math.prod(shape)
    blocks = [
        jax.random.normal(jax.random.fold_in(key, i), (_DRAW,), dtype)
        for i in range(-(-size // _DRAW))
    ]
    return (jnp.concatenate(blocks)[:size] * 0.02).reshape(shape)


def instance_norm(x: Array, epsilon: float = 1e-5) -> Array:
    """Normalises each channel of each image over height and width, in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.var(x32, axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + epsilon)).astype(x.dtype)


def reflect_pad(x: Array, size: int) -> Array:
    return jnp.pad(x, ((0, 0), (size, size), (size, size), (0, 0)), mode="reflect")


def upsample(x: Array) -> Array:
    """Nearest-neighbour 2x upsampling, as Keras' UpSampling2D."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _conv(
    in_features: int,
    out_features: int,
    kernel: int,
    *,
    rngs: nnx.Rngs,
    dtype: jnp.dtype,
    stride: int = 1,
    padding: str | tuple = "VALID",
) -> nnx.Conv:
    return nnx.Conv(
        in_features,
        out_features,
        (kernel, kernel),
        strides=stride,
        padding=padding,
        kernel_init=normal_init,
        dtype=dtype,
        rngs=rngs,
    )


class ResnetBlock(nnx.Module):
    """x + IN(conv(pad(ReLU(IN(conv(pad(x))))))), 3x3 convolutions, reflection padding."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
        self.conv1 = _conv(channels, channels, 3, rngs=rngs, dtype=dtype)
        self.conv2 = _conv(channels, channels, 3, rngs=rngs, dtype=dtype)

    def __call__(self, x: Array) -> Array:
        y = nnx.relu(instance_norm(self.conv1(reflect_pad(x, 1))))
        return x + instance_norm(self.conv2(reflect_pad(y, 1)))


class ResnetGenerator(nnx.Module):
    """The reference generator (Johnson et al.): 7x7 stem, two stride-2 convolutions,
    ``num_blocks`` residual blocks at 1/4 resolution, two transposed convolutions back.

    Side lengths must be multiples of 4.
    """

    def __init__(
        self,
        width: int = 64,
        num_blocks: int = 9,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        conv = functools.partial(_conv, rngs=rngs, dtype=dtype)
        self.stem = conv(3, width, 7)
        self.down = nnx.List(
            [conv(width * 2**i, width * 2 ** (i + 1), 3, stride=2, padding=PAD_1) for i in (0, 1)]
        )
        self.blocks = nnx.List(
            [ResnetBlock(width * 4, rngs=rngs, dtype=dtype) for _ in range(num_blocks)]
        )
        # torch's ConvTranspose2d(k=3, s=2, padding=1, output_padding=1): exactly 2x.
        self.up = nnx.List(
            [
                nnx.ConvTranspose(
                    width * 2 ** (2 - i),
                    width * 2 ** (1 - i),
                    (3, 3),
                    strides=(2, 2),
                    padding=((1, 2), (1, 2)),
                    kernel_init=normal_init,
                    dtype=dtype,
                    rngs=rngs,
                )
                for i in (0, 1)
            ]
        )
        self.head = conv(width, 3, 7)

    def __call__(self, x: Array) -> Array:
        x = nnx.relu(instance_norm(self.stem(reflect_pad(x, 3))))
        for conv in self.down:
            x = nnx.relu(instance_norm(conv(x)))
        for block in self.blocks:
            x = block(x)
        for conv in self.up:
            x = nnx.relu(instance_norm(conv(x)))
        return jnp.tanh(self.head(reflect_pad(x, 3)).astype(jnp.float32))


class UNetGenerator(nnx.Module):
    """MelaNet's U-Net (from eriklindernoren/Keras-GAN): four stride-2 4x4 convolutions
    down (LeakyReLU 0.2, then instance norm), three times upsample + 4x4 convolution
    (ReLU, then instance norm) + the skip of the same size, then upsample, 4x4, tanh.

    Side lengths must be multiples of 16.
    """

    def __init__(self, width: int = 32, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
        conv = functools.partial(_conv, rngs=rngs, dtype=dtype, padding="SAME")
        down = [width * 2**i for i in range(4)]
        self.down = nnx.List(
            [
                conv(c_in, c_out, 4, stride=2)
                for c_in, c_out in zip((3, *down[:-1]), down, strict=True)
            ]
        )
        # Each up-block maps to the width of the skip it is concatenated with.
        up_in = (down[3], 2 * down[2], 2 * down[1])
        self.up = nnx.List(
            [conv(c_in, c_out, 4) for c_in, c_out in zip(up_in, down[2::-1], strict=True)]
        )
        self.head = conv(2 * down[0], 3, 4)

    def __call__(self, x: Array) -> Array:
        skips = []
        for conv in self.down:
            x = instance_norm(nnx.leaky_relu(conv(x), 0.2))
            skips.append(x)
        for conv, skip in zip(self.up, skips[-2::-1], strict=True):
            x = jnp.concatenate([instance_norm(nnx.relu(conv(upsample(x)))), skip], axis=-1)
        return jnp.tanh(self.head(upsample(x)).astype(jnp.float32))


class PatchDiscriminator(nnx.Module):
    """The reference PatchGAN: a score per overlapping patch of the input.

    ``num_layers`` stride-2 4x4 convolutions and one stride-1 convolution, each followed
    by instance norm (not the first) and LeakyReLU 0.2, then a 1-channel stride-1 4x4
    head. With 3 layers each score sees a 70x70 patch.
    """

    def __init__(
        self,
        width: int = 64,
        num_layers: int = 3,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        conv = functools.partial(_conv, rngs=rngs, dtype=dtype, padding=PAD_1)
        widths = [width * min(2**n, 8) for n in range(num_layers + 1)]
        self.first = conv(3, widths[0], 4, stride=2)
        self.convs = nnx.List(
            [
                conv(widths[n - 1], widths[n], 4, stride=2 if n < num_layers else 1)
                for n in range(1, num_layers + 1)
            ]
        )
        self.head = conv(widths[-1], 1, 4)

    def __call__(self, x: Array) -> Array:
        x = nnx.leaky_relu(self.first(x), 0.2)
        for conv in self.convs:
            x = nnx.leaky_relu(instance_norm(conv(x)), 0.2)
        return self.head(x).astype(jnp.float32)


GENERATORS: dict[str, Callable[..., nnx.Module]] = {
    "resnet_9blocks": functools.partial(ResnetGenerator, num_blocks=9),
    "resnet_6blocks": functools.partial(ResnetGenerator, num_blocks=6),
    "unet": UNetGenerator,
}


class CycleGAN(nnx.Module):
    """The four networks of a CycleGAN between image domains A and B.

    ``g_ab`` translates A to B and ``g_ba`` B to A; ``d_a`` tells real A images from
    translated ones, ``d_b`` the same for B.
    """

    def __init__(
        self,
        generator: str = "resnet_9blocks",
        *,
        generator_width: int = 64,
        discriminator_width: int = 64,
        discriminator_layers: int = 3,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
    ):
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {sorted(GENERATORS)}, not {generator!r}")
        make_generator = functools.partial(
            GENERATORS[generator], generator_width, rngs=rngs, dtype=dtype
        )
        make_discriminator = functools.partial(
            PatchDiscriminator, discriminator_width, discriminator_layers, rngs=rngs, dtype=dtype
        )
        self.g_ab, self.g_ba = make_generator(), make_generator()
        self.d_a, self.d_b = make_discriminator(), make_discriminator()
