r"""Plain ResNet-50 under the ASFF paper's protocol: the baseline ASFF is compared with.

    python scripts/train.py --config configs/resnet50.py --workdir runs/resnet50

Identical to configs/asff_resnet50.py but for the model (GAP -> Dense head). Cost on
the 2-core CPU: from scratch at 96 px for 15 epochs, 56 min (docs/reproduction.md; peak
memory not recorded).
"""

from skinjax import config as base_config

asff_resnet50 = base_config.sibling(__file__, "asff_resnet50")


def get_config():
    config = asff_resnet50.get_config()
    config.model.name = "resnet50"
    config.model.options = {}
    return config
