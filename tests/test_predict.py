"""Prediction of a folder holding a corrupt file and a stray non-image file."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tiny_run
from PIL import Image

from skinjax.apps import export, predict

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tiny_run.workdir(tmp_path_factory)


@pytest.fixture
def folder(tmp_path, workdir):
    """Two real images, a truncated JPEG and a text file."""
    folder = tmp_path / "images"
    folder.mkdir()
    real = sorted((workdir.parent / "data" / "malignant").iterdir())[:3]
    for path in real[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(real[2].read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_corrupt_files_get_errors_and_the_rest_predictions(folder, workdir, tmp_path):
    model = predict.from_workdirs(str(workdir))
    paths = predict.list_files([str(folder)])
    results = predict.predict(model, paths, batch_size=3, gradcam_dir=str(tmp_path / "cams"))
    by_name = {os.path.basename(r.path): r for r in results}
    assert [os.path.basename(r.path) for r in results] == sorted(by_name)
    assert "corrupt or truncated JPEG" in by_name["broken.jpg"].error
    assert "not a readable image" in by_name["notes.txt"].error
    good = [r for r in results if not r.error]
    assert len(good) == 2
    for r in good:
        assert sum(r.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert r.predicted == model.classes[int(np.argmax(r.probabilities))]
        with Image.open(r.gradcam) as overlay:
            assert overlay.size == (predict.OVERLAY_SIZE, predict.OVERLAY_SIZE)
    # The exported artifact predicts the same.
    artifact = tmp_path / "artifact"
    export.export(str(workdir), str(artifact), platforms=("cpu",), onnx=False)
    again = predict.predict(predict.from_artifact(str(artifact)), paths, batch_size=3)
    for a, b in zip(results, again, strict=True):
        assert bool(a.error) == bool(b.error) and a.predicted == b.predicted
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_script_reports_each_bad_file_and_exits_1(folder, workdir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "predict.py"),
            f"--workdir={workdir}",
            "--format=json",
            str(folder),
            str(tmp_path / "missing.jpg"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    records = json.loads(result.stdout)
    assert len(records) == 5
    assert sum("probabilities" in r for r in records) == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert any("broken.jpg: corrupt or truncated JPEG" in e for e in errors)
    assert any("missing.jpg: cannot read the file" in e for e in errors)
