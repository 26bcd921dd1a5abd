"""Smoke test: a tiny ResNet-18 (width 8) at 64 px, two short stages of one step each.

    python scripts/train.py --config configs/smoke.py --workdir runs/smoke
    python scripts/evaluate.py --workdir runs/smoke

Cost on the 2-core CPU, in a fresh clone with no ../shared, while three other jobs
shared the cores (load average 11-14): training 4 min 16 s to 5 min 14 s, peak 1.3 GiB
(most of it start-up: imports, data scan, compiling and checking two stages' steps);
evaluate.py 1 min 18 s to 1 min 25 s, peak 0.5 GiB.

Trains on 120 synthetic lesion images (`skinjax.data.synthetic`), written to
runs/synthetic_data on first use, with a stratified 20% validation split: no download
needed. On the real ISIC 2020 images instead, add
``--config.data.source=folders --config.data.dir=../shared/data/isic2020-part/train``.
Numbers from it mean nothing; it checks that everything runs end to end.
"""

from skinjax import config as base_config


def get_config():
    config = base_config.base()
    config.model.name = "resnet18"
    config.model.options = {"width": 8}
    config.data.update(source="synthetic", dir="runs/synthetic_data", image_size=64)
    config.augment.update(vflip=True, rotation=20.0, translation=0.1, zoom=0.1)
    config.stages = {
        "stage1": base_config.stage_config(
            num_epochs=0.1, freeze_backbone=True, learning_rate=1e-3
        ),
        "stage2": base_config.stage_config(num_epochs=0.2, learning_rate=1e-3, schedule="cosine"),
    }
    config.train.update(
        batch_size=32, log_every_steps=5, eval_every_epochs=0.1, checkpoint_every_steps=10
    )
    config.eval.update(batch_size=64, bootstrap_samples=100)
    return config
