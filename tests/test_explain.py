"""CAM, Grad-CAM, overlays, crop boxes, and the CAM-crop collection on real images."""

import csv
import pathlib

import ham10000_run
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_run
from flax import nnx
from PIL import Image

from skinjax import models
from skinjax.apps import cam_crop, explain, export
from skinjax.data import augment, metadata, prepare
from skinjax.data.reading import ReadOptions
from skinjax.train import loop, trained


class QuadrantModel(nnx.Module):
    """Logits that depend on the bottom-right quadrant of the image alone.

    The image is masked to the quadrant before a bias-free 4x4 convolution of stride 4
    and ReLU, so the 8x8 feature map is zero away from it; GAP and a dense layer with
    positive weights (or, with ``hidden``, a squaring layer first: not a GAP + linear head)
    give the logits.
    """

    cam_layers = ("map",)

    def __init__(self, *, hidden: bool = False, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (4, 4), strides=4, padding="VALID", use_bias=False, rngs=rngs)
        positive = nnx.initializers.uniform(1.0)
        self.hidden = nnx.Linear(8, 8, rngs=rngs) if hidden else None
        self.fc = nnx.Linear(8, 2, kernel_init=positive, rngs=rngs)

    def features(self, x):
        size = x.shape[1]
        mask = jnp.zeros((size, size, 1)).at[size // 2 :, size // 2 :].set(1.0)
        return {"map": nnx.relu(self.conv(x * mask))}

    def classify(self, features):
        pooled = features["map"].mean(axis=(1, 2))
        if self.hidden is not None:
            pooled = jnp.square(self.hidden(pooled))
        return self.fc(pooled)

    def __call__(self, x):
        return self.classify(self.features(x))


@pytest.fixture
def images():
    return jax.random.normal(jax.random.key(0), (3, 32, 32, 3))


@pytest.mark.parametrize("method", [explain.grad_cam, explain.cam])
def test_map_peaks_in_the_only_quadrant_the_logit_depends_on(method, images):
    model = QuadrantModel(rngs=nnx.Rngs(0))
    elsewhere = images.at[:, :16].set(5.0).at[:, :, :16].set(-5.0)
    np.testing.assert_allclose(model(elsewhere), model(images), rtol=1e-6)
    maps = np.asarray(method(model, images).heatmaps)
    for heatmap in maps:
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert row >= 16 and col >= 16
        assert heatmap[16:, 16:].sum() > 0.9 * heatmap.sum()
        # Upsampling from 8x8 blurs the edge by a cell (4 px); beyond it, nothing.
        assert heatmap[:12].max() == 0 and heatmap[:, :12].max() == 0


def test_cam_is_the_dense_weights_applied_to_the_last_map():
    model = models.build("resnet18", 3, width=8)
    x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    targets = jnp.array([0, 1, 2, 1])
    maps = explain.cam(model, x, targets)
    expected = jnp.einsum("nhwk,kc->nhwc", model.features(x)["stage5"], model.fc.kernel[...])
    expected = nnx.relu(expected[jnp.arange(4), ..., targets])
    expected = jax.image.resize(expected, (4, 64, 64), "bilinear")
    peaks = expected.max(axis=(1, 2), keepdims=True)
    assert (peaks > 0).sum() >= 2  # the comparison below is not all zeros
    expected = expected / jnp.maximum(peaks, 1e-12)
    np.testing.assert_allclose(maps.heatmaps, expected, atol=1e-5)
    np.testing.assert_array_equal(maps.targets, targets)
    # Behind GAP + linear, Grad-CAM is CAM up to a scale.
    np.testing.assert_allclose(explain.grad_cam(model, x, targets).heatmaps, expected, atol=1e-5)
    predicted = explain.grad_cam(model, x)
    np.testing.assert_array_equal(predicted.targets, jnp.argmax(predicted.logits, -1))


def test_cam_refuses_a_head_that_is_not_gap_and_linear(images):
    model = QuadrantModel(hidden=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GAP \\+ linear"):
        explain.cam(model, images)
    assert explain.grad_cam(model, images).heatmaps.shape == (3, 32, 32)


def test_only_cam_layers_can_be_explained(images):
    with pytest.raises(ValueError, match="cam_layers"):
        explain.grad_cam(models.build("resnet18", 2, width=8), images, layer="stage4")


def test_crop_box_holds_the_peak_region_and_not_a_weaker_one():
    yy, xx = np.mgrid[:100, :100]
    blob = lambda y, x, r: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r**2))
    heatmap = blob(30, 60, 6) + 0.5 * blob(80, 15, 6)
    box = explain.crop_box(heatmap, threshold=0.2, margin=0.0)
    assert box.top < 0.30 < box.bottom and box.left < 0.60 < box.right
    assert box.bottom < 0.5 and box.left > 0.3  # the weaker blob is left out
    wider = explain.crop_box(heatmap, threshold=0.2, margin=0.1)
    assert wider.top == pytest.approx(box.top - 0.1) and wider.right == pytest.approx(
        box.right + 0.1
    )
    assert explain.crop_box(np.zeros((8, 8)), threshold=0.2, margin=0.0) == explain.Box(0, 0, 1, 1)
    assert explain.Box(0.25, 0.5, 0.75, 1.0).crop(np.zeros((200, 100, 3))).shape == (100, 50, 3)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.9])
def test_crop_box_contains_the_activation_peak(threshold):
    model = models.build("resnet18", 2, width=8)
    x = jax.random.normal(jax.random.key(2), (6, 64, 64, 3))
    for heatmap in np.asarray(explain.grad_cam(model, x).heatmaps):
        box = explain.crop_box(heatmap, threshold=threshold, margin=0.05)
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert box.top <= row / 64 < box.bottom and box.left <= col / 64 < box.right


def test_overlay_png(tmp_path):
    image = np.full((40, 60, 3), 128, np.uint8)
    heatmap = np.zeros((8, 8))
    heatmap[0, 0] = 1.0
    explain.save_overlay(tmp_path / "o.png", image, heatmap)
    written = np.asarray(Image.open(tmp_path / "o.png"))
    assert written.shape == (40, 60, 3)
    hot, cold = written[0, 0].astype(int), written[-1, -1].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where hot, blue where cold


@pytest.fixture(scope="module")
def metadata_run(tmp_path_factory) -> trained.Trained:
    """The tiny real HAM10000 run with the patient-metadata branch."""
    return trained.load(str(ham10000_run.workdir(tmp_path_factory, metadata=True)))


def _validation(run: trained.Trained, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` validation images of the run (uint8) and their encoded rows."""
    val = prepare.prepare(run.config.data).parts["val"].subset(range(count))
    read = ReadOptions.from_config(run.config.data)
    pixels = np.stack([read.load(p) for p in val.paths])
    return pixels, metadata.encoder(run.config.model, run.config.data).encode(val)


def test_metadata_models_explain_the_logit_their_rows_give(metadata_run):
    pixels, rows = _validation(metadata_run, 6)
    data = metadata_run.config.data
    x = augment.normalize(pixels, tuple(data.mean), tuple(data.std))
    model = metadata_run.model
    maps = explain.grad_cam(model, x, metadata=rows)
    np.testing.assert_allclose(maps.logits, model(x, rows), atol=1e-5)
    np.testing.assert_array_equal(maps.targets, np.argmax(model(x, rows), -1))
    # The export's Grad-CAM (scripts/predict.py --gradcam) is this one.
    heatmaps = export.inference_functions(metadata_run)[1](pixels, rows)
    np.testing.assert_allclose(heatmaps, maps.heatmaps, atol=1e-5)
    # The head is linear in the pooled image features and the rows' branch: CAM applies,
    # and for a given class the rows shift the logit, not the map.
    older = rows.copy()
    older[:, 0] = 0.85
    assert np.abs(model(x, older) - model(x, rows)).max() > 1e-3
    for method in (explain.cam, explain.grad_cam):
        a = method(model, x, maps.targets, metadata=rows)
        b = method(model, x, maps.targets, metadata=older)
        np.testing.assert_allclose(a.heatmaps, b.heatmaps, atol=1e-5)
        assert np.abs(a.logits - b.logits).max() > 1e-3
    with pytest.raises(ValueError, match=r"takes patient metadata: pass metadata=.*\[6, 20\]"):
        explain.grad_cam(model, x)
    with pytest.raises(ValueError, match=r"metadata has shape \[6, 19\], not \[6, 20\]"):
        explain.cam(model, x, metadata=rows[:, 1:])
    with pytest.raises(ValueError, match="has no patient-metadata branch"):
        explain.grad_cam(models.build("resnet18", 7, width=8), x, metadata=rows)


@pytest.fixture(params=["synthetic", "ham10000 with metadata"])
def stage1(request, tmp_path_factory) -> pathlib.Path:
    """Stage-1 runs: the synthetic one, and a real one with the patient-metadata branch."""
    if request.param == "synthetic":
        return tiny_run.workdir(tmp_path_factory)
    return ham10000_run.workdir(tmp_path_factory, metadata=True)


def test_cam_crops_form_a_collection_that_trains(stage1, tmp_path):
    run = trained.load(str(stage1))
    data = cam_crop.write_crops(run, str(tmp_path / "crops"), run.config.cam_crop)
    with open(tmp_path / "crops" / cam_crop.CSV_FILE) as f:
        rows = list(csv.DictReader(f))
    originals = prepare.prepare(run.config.data).parts
    crops = prepare.prepare(data).parts
    assert sorted(crops) == sorted(originals)
    for split, part in originals.items():
        assert crops[split].ids == part.ids  # same images, same split, same labels
        np.testing.assert_array_equal(crops[split].labels, part.labels)
        # and the same lesion ids and patient metadata, where the run had them
        keep = lambda e: (e.groups, e.metadata)
        assert list(map(keep, crops[split].examples)) == list(map(keep, part.examples))
    originals = {e.id: e.path for part in originals.values() for e in part.examples}
    for row in rows:
        box = explain.Box(*(float(row[k]) for k in ("top", "left", "bottom", "right")))
        with Image.open(originals[row["image_id"]]) as original:
            expected = box.crop(np.asarray(original)).shape
        with Image.open(tmp_path / "crops" / row["file"]) as crop:
            assert crop.size == (expected[1], expected[0])
    config = run.config.copy_and_resolve_references()
    config.data.update(data)
    config.stages.stage1.num_epochs = 0.5
    assert "accuracy" in loop.train_and_evaluate(config, str(tmp_path / "stage2"))
