"""The training loop on synthetic JPEG files (conftest): exact resume, stages, clear errors."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tiny_run
from PIL import Image

from configs import smoke
from skinjax.apps import report
from skinjax.data import synthetic
from skinjax.train import build, classifier, lock, loop, memory
from skinjax.train.checkpoints import CheckpointMismatch


@pytest.fixture
def config(small_folder):
    """Two stages of 3 steps each (24 images, batch 8), checkpoints every 2 steps."""
    config = smoke.get_config()
    config.data.update(source="folders", dir=str(small_folder))
    config.data.image_size = 32
    config.data.val_fraction = 0.25  # 18 train, 6 val images: 2 steps an epoch
    config.train.update(
        batch_size=8,
        log_every_steps=1,
        checkpoint_every_steps=2,
        keep_checkpoints=10,
        eval_every_epochs=1.0,
    )
    config.stages.stage1.num_epochs = 1.5
    config.stages.stage2.num_epochs = 1.5
    config.eval.batch_size = 4
    return config


def _params(workdir):
    step = ocp.CheckpointManager(f"{workdir}/checkpoints").latest_step()
    restored = ocp.StandardCheckpointer().restore(f"{workdir}/checkpoints/{step}/state")
    return step, restored["params"]


def test_resume_is_exact_mid_stage_and_across_stages(config, tmp_path):
    straight = tmp_path / "straight"
    loop.train_and_evaluate(config, str(straight))
    final_step, expected = _params(straight)
    assert final_step == 6
    for resume_from in (2, 3, 4):  # mid stage 1, end of stage 1, mid stage 2
        resumed = tmp_path / f"resumed{resume_from}"
        shutil.copytree(straight, resumed)
        for later in (resumed / "checkpoints").iterdir():
            if int(later.name) > resume_from:  # as if killed after step resume_from
                shutil.rmtree(later)
        loop.train_and_evaluate(config, str(resumed))
        step, params = _params(resumed)
        assert step == final_step
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params, expected)


def _flat(state):
    return {
        "/".join(str(k.key) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state.to_pure_dict())[0]
    }


def test_frozen_stage_step_changes_the_head_only(config, tmp_path):
    trainer = loop.Trainer(config, str(tmp_path))
    step = trainer.step_for(config.stages.stage1, num_steps=10)
    assert step.freeze_backbone
    train_fn, _ = classifier.compile_steps(step, trainer.placement, flip_tta=False)
    state = trainer.fresh_state(step)
    before = {**_flat(state.params), **_flat(state.rest)}
    batch = trainer.placement.put_batch(next(trainer.train_iterator()))
    state, _ = train_fn(trainer.placement.put_state(state), batch)
    after = {**_flat(jax.device_get(state.params)), **_flat(jax.device_get(state.rest))}
    backbone = [k for k in before if k.startswith("backbone/")]
    head = [k for k in before if not k.startswith("backbone/")]
    assert backbone and head
    for k in backbone:  # weights and BatchNorm statistics alike
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert all(not np.array_equal(after[k], before[k]) for k in head if "kernel" in k)


def test_workdir_of_another_model_is_refused(config, tmp_path):
    config.stages = {"stage1": config.stages.stage1}
    config.stages.stage1.num_epochs = 0.5
    loop.train_and_evaluate(config, str(tmp_path))
    written = {f: (tmp_path / f).read_bytes() for f in (build.CONFIG_FILE, build.RUN_FILE)}
    config.model.options = {"width": 16}
    config.model.name = "resnet34"
    with pytest.raises(CheckpointMismatch, match="another model.*resnet18.*resnet34"):
        loop.train_and_evaluate(config, str(tmp_path))
    # Refused before anything was written: evaluation still finds the good run.
    assert {f: (tmp_path / f).read_bytes() for f in written} == written


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("data.image_size", 0, "config.data.image_size must be positive, not 0"),
        ("eval.batch_size", 6, "config.eval.batch_size=6 does not divide over 4 devices"),
        ("data.min_image_size", 4000, "smaller than config.data.min_image_size=4000"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    config, tmp_path, monkeypatch, field, value, message
):
    monkeypatch.setattr(jax, "device_count", lambda: 4)  # train batch 8 divides; eval 6 not
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == [lock.LOCK_FILE]


def test_a_step_that_cannot_fit_is_refused_before_anything_is_written(config, tmp_path):
    """The memory check compiles the step and compares XLA's figures with the budget."""
    config.train.memory_limit_gib = 1e-3  # 1 MiB: no train step fits
    with pytest.raises(memory.InsufficientMemory) as refused:
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    message = str(refused.value)
    assert "the stage1 train step (resnet18, batch 8, 32 px, float32) needs" in message
    assert "but 0.00 GiB are free (config.train.memory_limit_gib" in message
    assert "Lower config.train.batch_size" in message
    assert os.listdir(tmp_path / "run") == [lock.LOCK_FILE]


def test_the_memory_figure_is_xla_buffer_assignment():
    """arguments + outputs - donated (aliased) + temporaries + code, in bytes."""
    f = jax.jit(lambda x, y: (x @ y, jnp.sin(x).sum()), donate_argnums=0)
    x = jnp.ones((256, 256))
    m = memory.StepMemory.of(f.lower(x, x).compile())
    assert m.arguments == 2 * 256 * 256 * 4 and m.aliased == 256 * 256 * 4
    assert m.total == m.arguments + m.outputs - m.aliased + m.temporaries + m.code
    memory.check_fits(m, what="f", limit_gib=1.0, advice="")  # fits: no error


def _add_non_rgb_images(folder):
    for mode, name in (("L", "grey.jpg"), ("RGBA", "rgba.png"), ("CMYK", "cmyk.jpg")):
        for label, value in (("benign", 90), ("malignant", 160)):
            Image.new(mode, (48, 40), value).save(f"{folder}/{label}/{name}")


def test_non_rgb_images_train_and_evaluate_with_convert_to_rgb(config, tmp_path):
    _add_non_rgb_images(config.data.dir)
    config.data.convert_to_rgb = True
    config.stages = {"stage1": config.stages.stage2}
    config.stages.stage1.num_epochs = 1.0
    loop.train_and_evaluate(config, str(tmp_path))
    # Evaluating both splits reads every image, the converted ones included.
    counts = [report.evaluate([str(tmp_path)], split=s)["num_examples"] for s in ("train", "val")]
    assert sum(counts) == 30


def test_evaluation_reads_with_its_data_overrides(small_folder, tmp_path_factory, tmp_path):
    """evaluate.py --data.dir=D --data.convert_to_rgb=True on a run trained without it."""
    workdir = tiny_run.workdir(tmp_path_factory)
    _add_non_rgb_images(small_folder)
    overrides = {"dir": str(small_folder), "convert_to_rgb": True, "val_fraction": 0.5}
    counts = [
        report.evaluate(
            [str(workdir)], split=s, data_overrides=overrides, out_dir=str(tmp_path / s)
        )["num_examples"]
        for s in ("train", "val")
    ]
    assert sum(counts) == 30


def test_a_csv_collection_with_a_published_split_trains_and_evaluates(config, small_csv, tmp_path):
    config.data.update(
        source="csv",
        dir=str(small_csv),
        csv="labels.csv",
        classes=synthetic.CLASSES,
        id_column="image_id",
        label_column="label",
        path_column="file",
        split_column="split",
    )
    config.stages = {"stage1": config.stages.stage2}
    config.stages.stage1.num_epochs = 1.0
    loop.train_and_evaluate(config, str(tmp_path))
    result = report.evaluate([str(tmp_path)], split="val")
    assert result["num_examples"] == 6 and result["classes"] == list(synthetic.CLASSES)


def test_a_second_process_is_refused_and_a_killed_one_does_not_block(config, tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from skinjax.train import lock\n"
            "with lock.hold(sys.argv[1]):\n print('held', flush=True); time.sleep(120)",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.WorkdirBusy, match=f"in use by process {holder.pid} on "):
            loop.train_and_evaluate(config, str(workdir))
        assert os.listdir(workdir) == [lock.LOCK_FILE]  # refused before the data scan
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    config.stages = {"stage1": config.stages.stage1}
    config.stages.stage1.num_epochs = 0.5
    loop.train_and_evaluate(config, str(workdir))  # the dead holder's lock file is left
    assert (workdir / build.CONFIG_FILE).exists()


def test_unknown_stage_names_are_refused(config, tmp_path):
    config.stages = {"head": config.stages.stage1}
    with pytest.raises(ValueError, match="stage1, stage2"):
        loop.Trainer(config, str(tmp_path))


def test_validation_scores_the_reweighted_probabilities(config, tmp_path):
    """With reweighting on, checkpoints are chosen on the probabilities evaluate.py reports."""
    config.eval.reweight_by_inverse_frequency = True
    trainer = loop.Trainer(config, str(tmp_path))
    trainer.class_counts = np.array([3, 1])

    def constant_eval_fn(state, batch):
        probs = np.tile(np.float32([0.6, 0.4]), (len(batch["index"]), 1))
        return {"index": batch["index"], "mask": batch["mask"], "probs": probs}

    scalars = trainer.validate(constant_eval_fn, state=None)
    # 0.6 / 3 < 0.4 / 1: reweighted, every image is called malignant (raw: every one benign).
    assert scalars["sensitivity"] == 1.0 and scalars["specificity"] == 0.0
    assert scalars["loss"] == pytest.approx(-np.mean(np.log([0.6, 0.4])), rel=1e-6)


def test_evaluate_writes_metrics_and_plots(config, tmp_path):
    config.stages = {"stage1": config.stages.stage2}
    config.stages.stage1.num_epochs = 1.0
    config.eval.threshold = "youden"
    loop.train_and_evaluate(config, str(tmp_path))
    result = report.evaluate([str(tmp_path)], split="val")
    written = json.loads((tmp_path / "eval_val" / "metrics.json").read_text())
    for name in (
        "accuracy",
        "precision",
        "sensitivity",
        "specificity",
        "f1",
        "balanced_accuracy",
        "roc_auc",
        "pr_auc",
        "confusion_matrix",
        "threshold",
    ):
        assert name in written
    assert written["num_examples"] == 6 and np.sum(written["confusion_matrix"]) == 6
    low, high = written["intervals_95"]["accuracy"]
    assert low <= result["accuracy"] <= high
    predictions = np.load(tmp_path / "eval_val" / "predictions.npz")
    np.testing.assert_allclose(predictions["probs"].sum(1), 1.0, atol=1e-5)
    for plot in ("roc.png", "pr.png", "confusion.png"):
        assert (tmp_path / "eval_val" / plot).stat().st_size > 1000
    # An ensemble of a run with itself gives the same probabilities.
    report.evaluate([str(tmp_path), str(tmp_path)], split="val", out_dir=str(tmp_path / "ens"))
    ensemble = np.load(tmp_path / "ens" / "predictions.npz")
    np.testing.assert_allclose(ensemble["probs"], predictions["probs"], atol=1e-6)


def test_external_evaluation_warns_of_copies_of_training_images(
    config, tmp_path, isic2020, small_folder, caplog
):
    from PIL import Image

    config.stages = {"stage1": config.stages.stage2}
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    external = tmp_path / "external"
    for name in ("benign", "malignant"):
        (external / name).mkdir(parents=True)
        for f in sorted((isic2020 / name).iterdir())[-3:]:  # not among the training images
            (external / name / f.name).symlink_to(f)
    copied = sorted((small_folder / "benign").iterdir())[0]
    with Image.open(copied) as image:
        image.transpose(Image.FLIP_LEFT_RIGHT).save(external / "benign" / "copy.jpg", quality=80)
    warned = 0
    for split in ("train", "val"):
        caplog.clear()
        report.evaluate([str(tmp_path / "run")], split=split, data_overrides={"dir": str(external)})
        warned += sum(
            int(r.getMessage().split(" of the ")[0])
            for r in caplog.records
            if "copies" in r.getMessage()
        )
    assert warned == 1


def test_the_compilation_cache_keeps_compiled_programs(tmp_path):
    previous = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    try:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        loop.use_compilation_cache(str(tmp_path / "compiled"))
        jax.jit(lambda x: x * 3 + 1)(jnp.ones(7)).block_until_ready()
        assert os.listdir(tmp_path / "compiled")
    finally:
        jax.config.update("jax_compilation_cache_dir", previous[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
