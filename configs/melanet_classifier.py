r"""MelaNet's second stage: a classifier on real + CycleGAN-synthesized images, focal loss.

    python scripts/train_cyclegan.py --config configs/melanet.py --workdir runs/melanet_gan
    python scripts/synthesize.py --workdir runs/melanet_gan --input_class benign \
        --output runs/melanet_synth
    python scripts/train.py --config configs/melanet_classifier.py --workdir runs/melanet_clf
    python scripts/evaluate.py --workdir runs/melanet_clf

The same without the synthetic images (same real images, split, seed and budget):
    ... --workdir runs/melanet_clf_real --config.data.csv=real.csv

MelaNet's classifier (hasibzunair/adversarial-lesions, train_ISIC_2016.ipynb): VGG-16
(ImageNet) + GAP + Dense 2, focal loss (gamma 2, alpha 0.25), scikit-learn's
"balanced" class weights, Adadelta 1e-3, batch 16, 300 epochs, learning rate x0.1 after
5 validation losses without improvement, early stop after 8. Differences: ResNet-50
instead of VGG-16 + GAP, which is not in the registry (--config.model.name=vgg16_gap is
the nearest; set --config.model.pretrained to converted ImageNet weights, see
docs/models.md); 224 px (these images' size) instead of 256.
Their Keras focal loss sums alpha and 1 - alpha over the two softmax outputs, so alpha
cancels there; --config.loss.focal_alpha=-1 gives that alpha-free loss.

Cost on the 2-core CPU: ResNet-18 from scratch at 96 px, about 1,000 steps, 31 min (real
+ synthetic) and 32 min (real only) (docs/reproduction.md; peak memory not recorded).
"""

from skinjax import config as base_config

SYNTHETIC_DIR = "runs/melanet_synth"  # scripts/synthesize.py --output


def get_config():
    config = base_config.base()
    config.model.name = "resnet50"
    config.data.update(
        source="csv",
        dir=SYNTHETIC_DIR,
        csv="combined.csv",  # real.csv: the real images alone
        classes=("benign", "malignant"),
        id_column="id",
        label_column="label",
        path_column="path",
        split_column="split",  # the CycleGAN run's split, synthetic images in train
        image_size=224,
    )
    config.augment.hflip = False  # MelaNet's classifier trains without augmentation
    config.loss.update(name="focal", focal_gamma=2.0, focal_alpha=0.25, class_weights="inverse")
    config.stages = {
        "stage1": base_config.stage_config(
            num_epochs=300.0,
            optimizer="adadelta",
            learning_rate=1e-3,
            plateau_factor=0.1,
            plateau_patience=5,
            early_stopping_patience=8,
        )
    }
    config.train.batch_size = 16
    return config
