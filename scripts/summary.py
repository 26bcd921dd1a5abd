r"""Prints a model's parameters and its forward cost per image.

    python -m scripts.summary --model asff_resnet50 [--image-size 224] [--num-classes 2]

The model is only traced, never initialised, so even ResNet-152 takes seconds. FLOPs
are XLA's count of the eval-mode forward pass (a multiply-add counts two), whichever
kernels run (`skinjax.kernels.flops`).
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import flags
from clu import parameter_overview
from flax import nnx

from skinjax import cli, models
from skinjax.kernels import flops

_MODEL = flags.DEFINE_string("model", None, "Registered model name.")
_IMAGE_SIZE = flags.DEFINE_integer("image-size", 224, "Height and width of the input.")
_NUM_CLASSES = flags.DEFINE_integer("num-classes", 2, "Number of output classes.")
flags.mark_flag_as_required("model")


def main(argv):
    del argv
    model = nnx.eval_shape(lambda: models.build(_MODEL.value, _NUM_CLASSES.value))
    model.eval()
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    print(parameter_overview.get_parameter_overview(params, include_stats=False))
    print(
        f"{_MODEL.value}: {flops.forward(model, _IMAGE_SIZE.value) / 1e9:.2f} GFLOPs per "
        f"{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value} image"
    )


if __name__ == "__main__":
    cli.run(main)
