r"""The CAM-crop two-stage method on ISIC 2017: nevus, melanoma, seborrheic keratosis.

    python scripts/train.py --config configs/cam_crop.py --workdir runs/cam_crop/full
    python scripts/cam_crop.py --workdir runs/cam_crop/full --out runs/cam_crop/crops
    python scripts/train.py --config configs/cam_crop.py:crops --workdir runs/cam_crop/crop
    python scripts/evaluate.py --workdir runs/cam_crop/full   # without crops
    python scripts/evaluate.py --workdir runs/cam_crop/crop   # with crops

The first run trains a GAP-headed classifier (VGG16-GAP, the CAM paper's model) on
whole images; the class activation map of its predicted class gives each image a box:
the connected region above ``cam_crop.threshold`` x the map's maximum that holds the
peak, grown by ``cam_crop.margin`` of the image side. The second run (the ``crops``
variant) trains the same model afresh on the crops, with the same published train / val
split, so its validation score is that of classifying the crop at test time. Each run
has two training stages: the head alone for 5 epochs, then everything. ImageNet weights:
``--config.model.pretrained=FILE`` (a torchvision checkpoint) on both runs.

Cost on the 2-core CPU, with ResNet-18 from scratch at 128 px (docs/reproduction.md's
commands): 34 min for the whole-image run, 29 min for the run on crops (peak memory not
recorded).
"""

from skinjax import config as base_config
from skinjax.apps import cam_crop

# The challenge scores two binary tasks, melanoma vs. rest and seborrheic keratosis vs.
# rest, by the mean of their ROC-AUCs; one 3-way softmax gives both one-vs-rest AUCs
# (metrics.json: roc_auc_per_class).
ISIC2017 = dict(
    source="csv",
    dir=base_config.ISIC2017,
    csv="labels.csv",
    classes=("nevus", "melanoma", "seborrheic_keratosis"),
    id_column="image_id",
    label_column="diagnosis",
    path_column="file",
    split_column="split",  # the published 2,000 / 150 split
)
CROPS_DIR = "runs/cam_crop/crops"


def get_config(variant: str = "full"):
    """``full``: stage 1 on whole images; ``crops``: stage 2 on scripts/cam_crop.py's output."""
    if variant not in ("full", "crops"):
        raise ValueError(f"variant must be 'full' or 'crops', not {variant!r}")
    config = base_config.base()
    config.model.name = "vgg16_gap"
    if variant == "full":
        config.data.update(ISIC2017)
    else:
        config.data.update(cam_crop.data_config(CROPS_DIR, ISIC2017["classes"]))
    config.data.image_size = 224
    config.augment.update(hflip=True, vflip=True, rotation=30.0, zoom=0.1)
    config.stages = {
        "stage1": base_config.stage_config(
            num_epochs=5.0, freeze_backbone=True, learning_rate=1e-3
        ),
        "stage2": base_config.stage_config(
            num_epochs=40.0,
            learning_rate=1e-4,
            schedule="cosine",
            early_stopping_patience=10,
        ),
    }
    config.cam_crop.update(method="cam", threshold=0.2, margin=0.1)
    return config
