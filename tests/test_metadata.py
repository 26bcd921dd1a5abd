"""The patient-metadata branch: encoding, the data pipeline, the model, a real run."""

import dataclasses
import json

import ham10000_run
import numpy as np
import pytest
from flax import nnx

from configs import ham10000 as ham_config
from skinjax import models
from skinjax.apps import report
from skinjax.data import metadata, pipeline, prepare, sources
from skinjax.data.reading import ReadOptions
from skinjax.models.with_metadata import WithMetadata

SEXES, SITES = len(("male", "female")), len(ham_config.HAM10000_SITES)
SIZE = 2 + SEXES + 1 + SITES + 1


def _data(root) -> dict:
    config = ham_config.get_config()
    config.data.dir = str(root)
    return config.data


def _encoder(data) -> metadata.Encoder:
    return metadata.encoder({"metadata": True}, data)


@pytest.fixture(scope="module")
def collection(ham10000):
    return sources.load(_data(ham10000))


def test_every_ham10000_image_is_encoded_with_missing_values_apart(collection, ham10000):
    encoded = _encoder(_data(ham10000)).encode(collection)
    assert encoded.shape == (len(collection), SIZE) and encoded.dtype == np.float32
    raw = np.array([e.metadata for e in collection.examples])
    age_missing = raw[:, 0] == ""
    assert age_missing.sum() == 36  # labels.csv: 36 rows without an age
    np.testing.assert_array_equal(encoded[:, 1], age_missing)
    np.testing.assert_array_equal(encoded[age_missing, 0], 0)
    np.testing.assert_allclose(encoded[~age_missing, 0], raw[~age_missing, 0].astype(float) / 100)
    sex, site = encoded[:, 2 : 2 + SEXES + 1], encoded[:, 2 + SEXES + 1 :]
    np.testing.assert_array_equal(sex.sum(1), 1)  # exactly one slot each
    np.testing.assert_array_equal(site.sum(1), 1)
    np.testing.assert_array_equal(sex[:, -1], raw[:, 1] == "unknown")
    np.testing.assert_array_equal(sex[:, 0], raw[:, 1] == "male")
    np.testing.assert_array_equal(site[:, -1], raw[:, 2] == "unknown")
    back = np.array(ham_config.HAM10000_SITES)[site[:, :-1].argmax(1)]
    known = raw[:, 2] != "unknown"
    np.testing.assert_array_equal(back[known], raw[known, 2])


def test_unknown_values_and_columns_are_errors_naming_them(collection, ham10000):
    data = _data(ham10000)
    data.site_values = tuple(s for s in ham_config.HAM10000_SITES if s != "scalp")
    message = r"column 'localization' has value 'scalp'.*config\.data\.site_values"
    with pytest.raises(sources.DataError, match=message):
        _encoder(data).encode(collection)
    bad_age = dataclasses.replace(collection.examples[0], metadata=("forty", "male", "back"))
    with pytest.raises(sources.DataError, match=r"ISIC_\d+.*column 'age' has value 'forty'"):
        _encoder(_data(ham10000)).encode(sources.Collection(collection.classes, (bad_age,)))
    data = _data(ham10000)
    data.site_column = "site"
    with pytest.raises(sources.DataError, match=r"labels.csv: no column 'site'"):
        sources.load(data)
    data.site_column = ""
    with pytest.raises(sources.DataError, match=r"config.data.site_column is empty"):
        sources.load(data)
    with pytest.raises(sources.DataError, match=r"set config.data.site_column"):
        _encoder(data)
    folders = {"source": "folders", "dir": str(ham10000), "age_column": "age"}
    with pytest.raises(sources.DataError, match=r"config.data.age_column needs a CSV collection"):
        sources.load(folders)


def test_the_pipeline_carries_each_examples_metadata(collection, ham10000):
    part = collection.subset(range(0, 300, 29))  # 11 examples: the last batch is padded
    encoder = _encoder(_data(ham10000))
    read = ReadOptions.from_config({"image_size": 16})
    batches = list(pipeline.eval_dataset(part, read, batch_size=4, metadata=encoder))
    index = np.concatenate([b["index"] for b in batches])
    rows = np.concatenate([b["metadata"] for b in batches])
    assert rows.shape == (12, SIZE)
    np.testing.assert_array_equal(rows[index >= 0], encoder.encode(part)[index[index >= 0]])
    np.testing.assert_array_equal(rows[index < 0], 0)


def test_the_branch_changes_predictions_when_the_metadata_changes():
    base = models.build("resnet18", 7, width=8)
    model = WithMetadata(base, metadata_size=SIZE, num_classes=7, image_size=32, seed=0)
    model.eval()
    images = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    rows = np.zeros((3, SIZE), np.float32)
    logits = model(images, rows)
    assert logits.shape == (3, 7)
    rows[:, 0] = 0.7  # older patients
    assert np.abs(model(images, rows) - logits).max() > 1e-3
    # The wrapped model's backbone is the one pretrained weights load into and stages freeze.
    assert model.backbone is base.backbone
    paths = {"/".join(map(str, p)) for p, _ in nnx.iter_graph(model)}
    assert any(p.startswith("base/backbone/") for p in paths)


def test_a_tiny_real_run_uses_the_metadata(tmp_path_factory, tmp_path):
    workdir = ham10000_run.workdir(tmp_path_factory, metadata=True)
    result = report.evaluate([str(workdir)], split="val", out_dir=str(tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text())["num_examples"] == 32
    assert 0 <= result["balanced_accuracy"] <= 1
    config = json.loads((workdir / "config.json").read_text())
    val = prepare.prepare(config["data"]).parts["val"]
    read = ReadOptions.from_config(config["data"])
    probs = report.predict_workdir(str(workdir), val, read)
    older = [dataclasses.replace(e, metadata=("85", *e.metadata[1:])) for e in val.examples]
    changed = report.predict_workdir(str(workdir), sources.Collection(val.classes, older), read)
    assert np.abs(changed - probs).max() > 1e-4
