"""The base experiment config: every field an experiment may set, with its default.

Experiment files in configs/ start from `base()` and change what they need. The
scripts load them with absl's config_flags, which locks them, so a misspelt key on the
command line (`--config.train.batch_sise=8`) is an error, not a silently ignored setting.
"""

from __future__ import annotations

import importlib.util
import os
import types

import ml_collections

ISIC2020_TRAIN = "../shared/data/isic2020-part/train"
ISIC2017 = "../shared/data/isic2017"


def data_overrides(data: ml_collections.ConfigDict) -> dict:
    """The fields of ``data`` that differ from `data_config`'s defaults: what a ``--data.x``
    flag of evaluation names, another collection. Compared as plain values (two empty
    ConfigDicts are not equal as ConfigDicts)."""
    defaults = data_config().to_dict()
    return {k: v for k, v in data.to_dict().items() if v != defaults[k]}


def data_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            # 'folders' (one folder per class), 'csv', 'prepared' (dir written by
            # scripts/prepare_data.py: resized, checked, split once) or 'synthetic' (drawn
            # lesions, written to `dir` on first use: skinjax.data.synthetic)
            source="folders",
            dir=ISIC2020_TRAIN,
            classes=(),  # class order; () = folder names sorted
            # csv collections: column names and label mapping
            csv="",
            id_column="",
            label_column="",  # '' = one-hot columns named after the classes
            path_column="",
            path_template="{id}.jpg",
            split_column="",  # a published split, kept as it is
            label_map={},
            # splits keep groups together: near-duplicate images always, and images that
            # share a value in any of these CSV columns, e.g. ("lesion_id", "patient_id")
            group_columns=(),
            # patient metadata (csv): columns and category values, for config.model.metadata
            age_column="",
            sex_column="",
            site_column="",  # anatomical site
            sex_values=(),  # e.g. ("male", "female"); missing values need not be listed
            site_values=(),
            # a published split with one group on both sides: 'error', 'drop' (the
            # copies outside the group's test / val side) or 'keep' (warned)
            on_split_leak="drop",
            # splits (ignored with split_column)
            val_fraction=0.2,
            test_fraction=0.0,
            split_seed=0,
            num_folds=0,
            fold=0,
            # reading
            image_size=224,
            on_bad_image="error",  # or 'skip': listed in workdir/skipped_files.txt
            convert_to_rgb=False,
            min_image_size=32,  # a file with a smaller side is a bad image (on_bad_image)
            oversample_ratio=0.0,  # e.g. 1.0: minority classes up to 1:1 (train only)
            # per-file results of the start-up scans, kept by (path, size, mtime) so a
            # rerun reads only new or changed files; '' = none (skinjax.data.file_cache)
            file_cache_dir="~/.cache/skinjax/files",
            read_threads=2,
            worker_count=0,  # grain worker processes for decoding
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        )
    )


def stage_config(**overrides) -> ml_collections.ConfigDict:
    """One training stage: what is trained, for how long, with which optimiser."""
    stage = ml_collections.ConfigDict(
        dict(
            num_epochs=1.0,
            freeze_backbone=False,  # train the head only; backbone BatchNorm in eval mode
            optimizer="adam",  # sgd | adam | adamw | adadelta
            learning_rate=1e-3,
            momentum=0.9,  # sgd
            nesterov=False,
            weight_decay=0.0,
            schedule="constant",  # constant | cosine | step
            warmup_epochs=0.0,
            step_every_epochs=10.0,  # step schedule
            step_factor=0.1,
            plateau_factor=0.0,  # > 0: multiply the rate by this when val loss stalls
            plateau_patience=3,  # evaluations without improvement
            early_stopping_patience=0,  # > 0: end the stage after this many evaluations
            clip_norm=0.0,
        )
    )
    stage.update(overrides)
    return stage


def base() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        # metadata: join age, sex and site (config.data.*_column) to the image features
        dict(name="resnet50", options={}, pretrained="", dtype="float32", metadata=False)
    )
    config.data = data_config()
    config.augment = ml_collections.ConfigDict(
        dict(
            hflip=True,
            vflip=False,
            rotation=0.0,
            translation=0.0,
            shear=0.0,
            zoom=0.0,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            fill_mode="reflect",
        )
    )
    config.loss = ml_collections.ConfigDict(
        dict(
            name="cross_entropy",  # or 'focal'
            label_smoothing=0.0,
            focal_gamma=2.0,
            focal_alpha=-1.0,  # < 0: none; binary convention: weight of class 1
            class_weights="none",  # none | inverse | sqrt_inverse (train counts)
        )
    )
    # Run in order stage1, stage2, ...; each continues from the weights of the last.
    config.stages = ml_collections.ConfigDict({"stage1": stage_config()})
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=32,  # global, over all devices and hosts
            seed=0,
            log_every_steps=50,
            eval_every_epochs=1.0,
            checkpoint_every_steps=500,
            keep_checkpoints=2,
            best_metric="roc_auc",  # validation metric that picks the best checkpoint
            profile=False,
            # The memory a train step may take; 0: what the host (CPU) or device has free.
            # Checked before the run starts (skinjax/train/memory.py).
            memory_limit_gib=0.0,
            # Compiled steps kept here and reused by a relaunch ('' = JAX's default,
            # no cache): jax_compilation_cache_dir, e.g. a bucket shared by a TPU slice.
            compilation_cache_dir="",
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(
            batch_size=64,
            flip_tta=True,
            threshold="0.5",  # '0.5' or 'youden' (chosen on validation)
            reweight_by_inverse_frequency=False,
            bootstrap_samples=1000,
            split="val",
        )
    )
    config.parallel = ml_collections.ConfigDict(dict(strategy="mesh"))  # or 'pmap'
    # Cropping to the class activation (scripts/cam_crop.py, configs/cam_crop.py).
    config.cam_crop = ml_collections.ConfigDict(
        dict(
            method="cam",  # 'cam' (GAP + linear heads) or 'gradcam'
            layer="",  # '' = the model's first cam_layers entry
            threshold=0.2,  # keep the region above this fraction of the map's maximum
            margin=0.1,  # added on every side of the box, as a fraction of the image side
        )
    )
    return config


def load_file(path: str) -> types.ModuleType:
    """The config file at ``path`` as a module, loaded by path as `config_flags` loads it:
    configs build on each other with no repository root on ``sys.path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    name = f"skinjax_config_{os.path.splitext(os.path.basename(path))[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling(file: str, name: str) -> types.ModuleType:
    """The config ``name`` from the folder of ``file`` (a config's ``__file__``)."""
    return load_file(os.path.join(os.path.dirname(os.path.abspath(file)), f"{name}.py"))
