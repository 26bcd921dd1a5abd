"""The ISIC challenge CSV format, and skinjax's metrics against the challenge's own scorer."""

import csv
import io
import json
import pathlib

import ham10000_run
import numpy as np
import pytest
from ham10000_run import HAM10000

from skinjax.apps import isic, predict, report


def test_columns_follow_the_challenge_whatever_the_class_order():
    classes = ("nv", "mel", "vasc", "bcc", "akiec", "bkl", "df")
    probs = np.array([[0.7, 0.1, 0.0, 0.05, 0.05, 0.05, 0.05], [0.0, 0.0, 1.0, 0, 0, 0, 0]])
    out = io.StringIO()
    isic.write_submission(out, ["ISIC_1", "ISIC_2"], probs, classes)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert rows[1] == ["ISIC_1", "0.1", "0.7", "0.05", "0.05", "0.05", "0.05", "0.0"]
    assert rows[2][0] == "ISIC_2" and rows[2][7] == "1.0"


@pytest.mark.parametrize(
    "classes, ids, message",
    [
        (("mel", "nv", "bcc", "akiec", "bkl", "df", "scc"), ["a"], r"missing \['VASC'\].*'scc'"),
        (("mel", "nv", "bcc", "akiec", "bkl", "df", "VASC"), ["a", "a"], r"repeated: \['a'\]"),
    ],
)
def test_bad_submissions_are_refused(classes, ids, message):
    with pytest.raises(ValueError, match=message):
        isic.write_submission(io.StringIO(), ids, np.full((len(ids), 7), 1 / 7), classes)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> pathlib.Path:
    return ham10000_run.workdir(tmp_path_factory)


@pytest.mark.parametrize("reweight", [True, False])
def test_metrics_equal_the_official_scorer(small_run, reweight, tmp_path):
    """Balanced accuracy, per-class ROC-AUC and average precision, and the mean AUC of a
    real prediction file, scored by skinjax and by isic-challenge-scoring."""
    scoring = pytest.importorskip("isic_challenge_scoring")
    result = report.evaluate(
        [str(small_run)], split="val", out_dir=str(tmp_path), reweight=reweight
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["balanced_accuracy"] == result["balanced_accuracy"]
    score = scoring.ClassificationScore.from_file(
        tmp_path / "isic_truth.csv",
        tmp_path / "isic_submission.csv",
        scoring.ClassificationMetric.BALANCED_ACCURACY,
    )
    names = [c.upper() for c in result["classes"]]
    assert score.overall == pytest.approx(result["balanced_accuracy"], abs=1e-12)
    assert score.macro_average["auc"] == pytest.approx(result["roc_auc"], abs=1e-12)
    per_class = score.per_category.loc[names]
    np.testing.assert_allclose(per_class["auc"], result["roc_auc_per_class"], atol=1e-12)
    np.testing.assert_allclose(per_class["ap"], result["pr_auc_per_class"], atol=1e-12)
    # Real, non-degenerate predictions: several classes predicted, AUCs away from 0.5.
    assert len({row.index(max(row)) for row in _rows(tmp_path / "isic_submission.csv")}) > 1
    assert np.ptp(result["roc_auc_per_class"]) > 0.1


def _rows(path: pathlib.Path) -> list[list[float]]:
    with open(path, newline="") as f:
        return [[float(x) for x in row[1:]] for row in list(csv.reader(f))[1:]]


def test_predict_writes_a_submission_of_the_readable_files(small_run, tmp_path):
    images = sorted((HAM10000 / "images").iterdir())[:3]
    broken = tmp_path / "ISIC_broken.jpg"
    broken.write_bytes(images[0].read_bytes()[:2000])
    model = predict.from_workdirs(str(small_run))
    results = predict.predict(model, [*map(str, images), str(broken)], batch_size=4)
    out = io.StringIO()
    predict.write_isic(results, model.classes, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["image", *isic.ISIC2018_COLUMNS]
    assert [row[0] for row in rows[1:]] == [path.stem for path in images]
    for row, result in zip(rows[1:], results, strict=False):
        assert [float(x) for x in row[1:]] == list(result.probabilities)  # ISIC order = classes
