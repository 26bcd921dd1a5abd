r"""ASFF-ResNet-50 as in the authors' code (Grapesea/ASFF-ResNet50-enhanced).

    python scripts/train.py --config configs/asff_resnet50.py --workdir runs/asff_resnet50
    python scripts/evaluate.py --workdir runs/asff_resnet50

Their protocol: ResNet-50 (ImageNet) whose stage-4 and stage-5 maps are fused by
channel weights (`fusion="channel"`; `--config.model.options.fusion=spatial` for the
paper's text), GAP -> Dense 2048 ReLU -> Dense 2; Adam 1e-5 constant; batch 32; 224 px;
random shifts of 10% (Keras' default 'nearest' fill) and horizontal flips; 500 epochs.
Differences, on purpose: we select the checkpoint on a stratified 20% validation split
of the training folder, where their code validates on the test set; ImageNet weights
come from a torchvision file (`--config.model.pretrained=resnet50.pth`), as no hub
download is possible here.

Cost on the 2-core CPU: the configured 500 epochs at 224 px are out of reach; from
scratch at 96 px for 15 epochs it took 58 min (docs/reproduction.md, with its command;
peak memory not recorded).
"""

from skinjax import config as base_config


def get_config():
    config = base_config.base()
    config.model.name = "asff_resnet50"
    config.model.options = {"fusion": "channel"}
    config.data.image_size = 224
    config.augment.update(hflip=True, translation=0.1, fill_mode="nearest")
    config.stages = {
        "stage1": base_config.stage_config(num_epochs=500.0, optimizer="adam", learning_rate=1e-5)
    }
    config.train.batch_size = 32
    return config
