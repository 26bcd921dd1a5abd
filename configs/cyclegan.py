r"""The reference CycleGAN (junyanz/pytorch-CycleGAN-and-pix2pix), benign -> malignant.

    python scripts/train_cyclegan.py --config configs/cyclegan.py --workdir runs/cyclegan
    python scripts/synthesize.py --workdir runs/cyclegan --input_class benign \
        --output runs/cyclegan_synth

ResNet-9-block generators (ngf 64), 70x70 PatchGAN discriminators (ndf 64), instance
norm, N(0, 0.02) init; LSGAN, cycle L1 x 10, identity L1 x 5 (0.5 x lambda), image
pools of 50; Adam 2e-4, beta1 0.5, constant for 100 epochs then linear decay to zero
over 100; batch 1; horizontal flips. An epoch is a pass over the larger domain (1,152
benign training images here). Differences from the reference: 128 px images resized
whole (the reference crops 256 px from 286 px; these images are 224 px and a CPU step
at 256 px is 4x slower), and the learning rate decays per step, not per epoch.

A step at 128 px is 468 GFLOP (XLA's count): 0.085 steps/s measured on this 2-core CPU
with one core taken by another job, about 0.15 expected alone (docs/cyclegan.md). The
reference's 200 epochs (230k steps) are out of reach; an hour is about 500 steps:
    --config.train.num_epochs=0.4 --config.optim.decay_epochs=0.2
Classes of another collection: --config.data.domain_a=... --config.data.domain_b=...
"""

import ml_collections

from skinjax import config as base_config


def get_config():
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            generator="resnet_9blocks",  # resnet_9blocks | resnet_6blocks | unet
            generator_width=64,
            discriminator_width=64,
            discriminator_layers=3,  # 3: 70x70 patches
            dtype="float32",
        )
    )
    config.data = base_config.data_config()
    config.data.update(image_size=128, domain_a="benign", domain_b="malignant")
    config.augment = base_config.base().augment  # hflip only
    config.loss = ml_collections.ConfigDict(dict(cycle_weight=10.0, identity_weight=5.0))
    config.optim = ml_collections.ConfigDict(
        dict(learning_rate=2e-4, b1=0.5, b2=0.999, decay_epochs=100.0)
    )
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=1,
            num_epochs=200.0,
            pool_size=50,  # 0: no pool
            seed=0,
            log_every_steps=50,
            sample_every_steps=250,  # a PNG grid in workdir/samples
            num_samples=4,  # validation images per domain in the grid
            checkpoint_every_steps=250,
            keep_checkpoints=2,
        )
    )
    config.parallel = ml_collections.ConfigDict(dict(strategy="mesh"))
    return config
