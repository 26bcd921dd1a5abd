"""The exported artifact reproduces the live model, and runs without skinjax."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import onnxruntime
import pytest
import tiny_run
from flax import nnx
from safetensors.numpy import load_file

from skinjax.apps import explain, export
from skinjax.data import augment, images, sources
from skinjax.kernels import flops
from skinjax.train import trained

jax2onnx = pytest.importorskip("jax2onnx", reason="pip install --no-deps jax2onnx==0.17.1")

METRICS = {
    "roc_auc": 0.75,
    "accuracy": 0.5,
    "num_examples": 6,
    "intervals_95": {"roc_auc": [0.5, 1.0]},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(work directory, artifact directory), exported once for the module."""
    workdir = tiny_run.workdir(tmp_path_factory)
    os.makedirs(workdir / "eval_val", exist_ok=True)
    (workdir / "eval_val" / "metrics.json").write_text(json.dumps(METRICS))
    out = tmp_path_factory.mktemp("artifact")
    export.export(str(workdir), str(out), platforms=("cpu", "cuda"))
    return workdir, out


@pytest.fixture(scope="module")
def live(exported):
    return trained.load(str(exported[0]))


def _real_images(run, count):
    collection = sources.from_folders(run.config.data.dir)
    return np.stack([images.load(p, run.image_size) for p in collection.paths[:count]])


def _live_logits(run, batch):
    data = run.config.data
    return np.asarray(run.model(augment.normalize(batch, tuple(data.mean), tuple(data.std))))


@pytest.mark.parametrize("batch_size", [1, 5])
def test_stablehlo_and_onnx_logits_equal_the_live_model(exported, live, batch_size):
    batch = _real_images(live, batch_size)
    expected = _live_logits(live, batch)
    artifact = export.load(str(exported[1]))
    logits, probabilities = artifact(batch)
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    session = onnxruntime.InferenceSession(str(exported[1] / export.ONNX))
    onnx_logits, _ = session.run(["logits", "probabilities"], {"images": batch})
    np.testing.assert_allclose(onnx_logits, expected, atol=1e-4)


def test_exported_gradcam_equals_the_live_one(exported, live):
    batch = _real_images(live, 3)
    data = live.config.data
    expected = explain.grad_cam(
        live.model, augment.normalize(batch, tuple(data.mean), tuple(data.std))
    )
    np.testing.assert_allclose(
        export.load(str(exported[1])).gradcam(batch), expected.heatmaps, atol=1e-5
    )


def test_model_card_and_weights(exported, live):
    card = json.loads((exported[1] / export.CARD).read_text())
    assert card["classes"] == ["benign", "malignant"]
    assert card["input"]["shape"] == [None, 32, 32, 3] and card["input"]["dtype"] == "uint8"
    assert card["normalization"]["mean"] == list(live.config.data.mean)
    assert card["source"]["checkpoint_step"] == live.step
    assert card["validation_metrics"]["roc_auc"] == 0.75
    assert card["training_config"]["model"]["name"] == "resnet18"
    assert card["export_check"]["max_abs_logit_difference"]["onnx"] < 1e-4
    markdown = (exported[1] / export.CARD_MARKDOWN).read_text()
    assert "benign, malignant" in markdown and "| roc_auc | 0.7500 | 0.500 to 1.000 |" in markdown
    weights = load_file(str(exported[1] / export.WEIGHTS))
    np.testing.assert_array_equal(weights["fc.kernel"], np.asarray(live.model.fc.kernel[...]))
    assert "backbone.stem.norm.mean" in weights
    assert card["forward_flops_per_image"] == flops.forward(live.model, 32) > 0
    assert set(card["checksums"]) == set(os.listdir(exported[1])) - {
        export.CARD,
        export.CARD_MARKDOWN,
    }


def test_a_non_empty_directory_is_kept_or_replaced_whole(exported, tmp_path):
    out = tmp_path / "artifact"
    out.mkdir()
    (out / export.ONNX).write_bytes(b"an earlier export")
    (out / export.CARD).write_text("the user's own card")
    with pytest.raises(export.ExportError, match="artifact is not empty.*--overwrite"):
        export.export(str(exported[0]), str(out), platforms=("cpu",), onnx=False)
    assert (out / export.CARD).read_text() == "the user's own card"
    export.export(str(exported[0]), str(out), platforms=("cpu",), onnx=False, overwrite=True)
    assert not (out / export.ONNX).exists()  # no stale file beside the new ones
    assert json.loads((out / export.CARD).read_text())["files"]["onnx"] == []
    assert os.listdir(tmp_path) == ["artifact"]  # nothing temporary left beside it


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[:4096] + bytes(4096) + data[8192:], "sha256 .* the file was modified"),
        (
            lambda data: data[: len(data) // 2],
            r"\d+ bytes where the model card records \d+: truncated",
        ),
    ],
)
def test_a_modified_or_truncated_file_is_named(exported, tmp_path, damage, message):
    copy = tmp_path / "artifact"
    shutil.copytree(exported[1], copy)
    path = copy / export.STABLEHLO
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(export.ArtifactError, match=f"{export.STABLEHLO}: {message}"):
        export.load(str(copy))


def test_artifact_runs_without_skinjax(exported):
    """The model card's recipe, in a fresh interpreter that never imports skinjax."""
    script = textwrap.dedent(
        f"""
        import sys
        import jax, numpy as np, onnxruntime
        batch = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), np.uint8)
        model = jax.export.deserialize(open("{export.STABLEHLO}", "rb").read())
        logits, probabilities = model.call(batch)
        session = onnxruntime.InferenceSession("{export.ONNX}")
        onnx_logits, _ = session.run(None, {{"images": batch}})
        assert np.abs(np.asarray(logits) - onnx_logits).max() < 1e-4
        assert not any(m.startswith("skinjax") for m in sys.modules)
        print(np.asarray(probabilities).shape)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=exported[1], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(3, 2)"


@pytest.mark.parametrize(
    "pool",
    [
        lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2)),  # VGG's
        lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),  # ResNet's
    ],
)
def test_onnx_max_pools_equal_lax(pool):
    (batch,) = jax.export.symbolic_shape("B")
    spec = jax.ShapeDtypeStruct((batch, 9, 9, 3), np.float32)
    model = jax2onnx.to_onnx(export._onnx_friendly(lambda x: (pool(x),), spec), [spec])
    session = onnxruntime.InferenceSession(model.SerializeToString())
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype(np.float32)
    (pooled,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_array_equal(pooled, pool(x))
