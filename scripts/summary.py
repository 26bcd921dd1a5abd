r"""Prints a model's parameters and its forward cost per image.

    python -m scripts.summary --model asff_resnet50 [--image-size 224] [--num-classes 2]

The model is only traced, never initialised, so even ResNet-152 takes seconds. FLOPs
are XLA's count for the compiled eval-mode forward pass (a multiply-add counts two).
"""

import jax
import jax.numpy as jnp
from absl import flags
from clu import parameter_overview
from flax import nnx

from skinjax import cli, models

_MODEL = flags.DEFINE_string("model", None, "Registered model name.")
_IMAGE_SIZE = flags.DEFINE_integer("image-size", 224, "Height and width of the input.")
_NUM_CLASSES = flags.DEFINE_integer("num-classes", 2, "Number of output classes.")
flags.mark_flag_as_required("model")


def forward_gflops(model: nnx.Module, image_size: int) -> float:
    """XLA's FLOP count of one eval-mode forward pass on one image, in GFLOPs."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return forward.lower(state, image).compile().cost_analysis()["flops"] / 1e9


def main(argv):
    del argv
    model = nnx.eval_shape(lambda: models.build(_MODEL.value, _NUM_CLASSES.value))
    model.eval()
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    print(parameter_overview.get_parameter_overview(params, include_stats=False))
    print(
        f"{_MODEL.value}: {forward_gflops(model, _IMAGE_SIZE.value):.2f} GFLOPs per "
        f"{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value} image"
    )


if __name__ == "__main__":
    cli.run(main)
