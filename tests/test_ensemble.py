"""Ensembles with weights, and test-time rotations, in evaluation (scripts/evaluate.py)."""

import json
import pathlib

import ham10000_run
import numpy as np
import pytest

from skinjax import parallel
from skinjax.apps import report
from skinjax.data import images
from skinjax.train import classifier, trained


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
    (tmp_path / "a").symlink_to(small_run, target_is_directory=True)
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
