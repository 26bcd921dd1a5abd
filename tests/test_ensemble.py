"""Ensembles with weights, and test-time rotations, in evaluation (scripts/evaluate.py)."""

import json
import pathlib

import ham10000_run
import jax
import numpy as np
import onnxruntime
import pytest

from skinjax import parallel
from skinjax.apps import export, predict, report
from skinjax.data import augment, images, metadata, prepare
from skinjax.train import build, classifier, trained


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> pathlib.Path:
    return ham10000_run.workdir(tmp_path_factory)


def _probs(run: trained.Trained, batch: np.ndarray, rotations: int) -> np.ndarray:
    inference, state = report.inference_state(run, rotations=rotations)
    eval_fn = classifier.compile_eval(inference, parallel.Placement("mesh"), flip_tta=True)
    inputs = {
        "image": batch,
        "label": np.zeros(len(batch), np.int32),
        "index": np.arange(len(batch), dtype=np.int32),
        "mask": np.ones(len(batch), bool),
    }
    return np.asarray(eval_fn(state, inputs)["probs"])


def test_eight_views_make_predictions_invariant_to_quarter_turns(small_run):
    run = trained.load(str(small_run))
    files = sorted((ham10000_run.HAM10000 / "images").iterdir())[:4]
    batch = np.stack([images.load(str(f), run.image_size) for f in files])
    turned = np.rot90(batch, 1, axes=(1, 2)).copy()
    np.testing.assert_allclose(_probs(run, batch, 4), _probs(run, turned, 4), atol=1e-5)
    assert np.abs(_probs(run, batch, 1) - _probs(run, turned, 1)).max() > 1e-3


def test_weighted_ensemble_averages_its_members_and_records_them(small_run, tmp_path, monkeypatch):
    """Two members: the run, and the run's probabilities with the classes shifted by one."""
    real = report.predict_workdir

    def members(workdir, collection, read, *, rotations):
        probs = real(str(small_run), collection, read, rotations=rotations)
        return probs if workdir == "a" else np.roll(probs, 1, axis=1)

    monkeypatch.setattr(report, "predict_workdir", members)
    for name in "ab":
        (tmp_path / name).symlink_to(small_run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    report.evaluate(["a", "b"], split="val", out_dir="e", reweight=False, weights=[1, 3])
    single = report.evaluate(["a"], split="val", out_dir="s", reweight=False)
    result = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert result["workdirs"] == ["a", "b"] and result["ensemble_weights"] == [0.25, 0.75]
    assert result["test_time_views"] == {"rotations": 1, "flip": True}
    a = np.load(tmp_path / "s" / "predictions.npz")["probs"]
    ensemble = np.load(tmp_path / "e" / "predictions.npz")["probs"]
    np.testing.assert_allclose(ensemble, 0.25 * a + 0.75 * np.roll(a, 1, axis=1), atol=1e-7)
    assert single["ensemble_weights"] == [1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": [1.0]}, r"must be 2 non-negative numbers \(one per work directory"),
        ({"weights": [0.0, 0.0]}, "not all zero"),
        ({"rotations": 3}, "rotations must be 1 .* or 4"),
    ],
)
def test_bad_ensemble_options_are_refused_before_any_work(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        report.evaluate(
            [str(tmp_path / "missing1"), str(tmp_path / "missing2")], split="val", **kwargs
        )


@pytest.fixture(scope="module")
def members(small_run, tmp_path_factory) -> list[str]:
    """Two real members: the run, and one with the patient-metadata branch."""
    return [str(small_run), str(ham10000_run.workdir(tmp_path_factory, metadata=True))]


@pytest.fixture(scope="module")
def ensemble_artifact(members, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("ensemble") / "artifact"
    export.export(members, str(out), weights=[1, 3], platforms=("cpu",))
    return out


def _val(workdir: str):
    """The validation images, and their metadata rows by id."""
    config, _ = build.load_run(workdir)
    val = prepare.prepare(config.data).parts["val"]
    encoder = metadata.encoder(config.model, config.data)
    rows = metadata.read_rows(f"{config.data.dir}/{config.data.csv}", encoder, "image_id")
    return val, rows


def test_an_ensemble_exports_as_one_function_of_the_weighted_mean(members, ensemble_artifact):
    val, rows = _val(members[1])
    batch = np.stack([images.load(p, 32) for p in val.paths[:5]])
    meta = np.stack([rows[i] for i in val.ids[:5]])
    live = [trained.load(w) for w in members]
    normalised = augment.normalize(
        batch, tuple(live[0].config.data.mean), tuple(live[0].config.data.std)
    )
    expected = 0.25 * jax.nn.softmax(live[0].model(normalised)) + 0.75 * jax.nn.softmax(
        live[1].model(normalised, meta)
    )
    artifact = export.load(str(ensemble_artifact))
    logits, probs = artifact(batch, meta)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(logits, np.log(expected), atol=1e-4)
    session = onnxruntime.InferenceSession(str(ensemble_artifact / export.ONNX))
    _, onnx_probs = session.run(None, {"images": batch, "metadata": meta})
    np.testing.assert_allclose(onnx_probs, expected, atol=1e-5)
    maps = artifact.gradcam(batch, meta)
    assert maps.shape == (5, 32, 32) and maps.min() >= 0
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1, atol=1e-6)  # each normalised
    with pytest.raises(ValueError, match=r"takes metadata rows of 20"):
        artifact(batch)
    card = json.loads((ensemble_artifact / export.CARD).read_text())
    assert [m["weight"] for m in card["ensemble"]["members"]] == [0.25, 0.75]
    assert [m["workdir"] for m in card["ensemble"]["members"]] == members
    assert [m["metadata"] for m in card["ensemble"]["members"]] == [False, True]
    assert card["metadata_input"]["shape"] == [None, 20]
    assert "An ensemble of 2" in (ensemble_artifact / export.CARD_MARKDOWN).read_text()


def test_predict_gives_the_probabilities_of_evaluate(members, ensemble_artifact, tmp_path):
    """Eight views, reweighting, a weighted ensemble with a metadata member: one protocol."""
    report.evaluate(members, split="val", out_dir=str(tmp_path), weights=[1, 3], rotations=4)
    evaluated = np.load(tmp_path / "predictions.npz")
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["reweighted_by_inverse_frequency"] and result["ensemble_weights"] == [0.25, 0.75]
    assert [m["metadata"] for m in result["ensemble_members"]] == [False, True]
    val, rows = _val(members[1])
    expected = dict(zip(evaluated["ids"], evaluated["probs"], strict=True))
    for model in (
        predict.from_workdirs(members, weights=[1, 3], rotations=4),
        predict.from_artifact(str(ensemble_artifact), rotations=4),
    ):
        results = predict.predict(model, val.paths, batch_size=8, metadata=rows)
        for r in results:
            np.testing.assert_allclose(
                r.probabilities, expected[predict.image_id(r.path)], atol=1e-5
            )
    # Not reweighted, and without the quarter turns: other probabilities.
    model = predict.from_workdirs(members, weights=[1, 3], reweight=False)
    plain = predict.predict(model, val.paths[:4], metadata=rows)
    assert np.abs(np.array([r.probabilities for r in plain]) - evaluated["probs"][:4]).max() > 1e-3
