r"""MelaNet's CycleGAN (hasibzunair/adversarial-lesions), benign -> malignant.

    python scripts/train_cyclegan.py --config configs/melanet.py --workdir runs/melanet_gan
    python scripts/synthesize.py --workdir runs/melanet_gan --input_class benign \
        --output runs/melanet_synth

Then the second stage, a classifier on real + synthesized images: configs/melanet_classifier.py.

As configs/cyclegan.py but with MelaNet's settings: U-Net generators (gf 32, four
down-blocks and three up-blocks with skips), identity L1 x 1.0 (0.1 x lambda), no image
pool, constant learning rate (100 epochs). Differences from MelaNet's Keras code: 128
px instead of 256; the reference's 70x70 PatchGAN (MelaNet's has four stride-2 layers
and sees 94x94 patches); generators updated before discriminators (MelaNet trains the
discriminators first); per-channel instance norm without learned scale (keras-contrib's
default normalises over all channels at once, with one learned scale and offset).

Cost on the 2-core CPU: 2 epochs of the larger domain (2,304 steps at 128 px,
``--config.train.num_epochs=2``) took 46 min while other runs shared the cores, and the
translation of 1,152 images 5 min (docs/reproduction.md; peak memory not recorded).
"""

from skinjax import config as base_config

cyclegan = base_config.sibling(__file__, "cyclegan")


def get_config():
    config = cyclegan.get_config()
    config.model.update(generator="unet", generator_width=32)
    config.loss.identity_weight = 1.0
    config.optim.decay_epochs = 0.0
    config.train.update(num_epochs=100.0, pool_size=0)
    return config
