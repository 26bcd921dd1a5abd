"""The markdown table of evaluations (scripts/table.py) on tiny real HAM10000 runs."""

import json
import shutil
import subprocess
import sys

import ham10000_run
import numpy as np
import pytest
from conftest import REPO

from skinjax.apps import report, table


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory) -> dict[str, str]:
    """The study's kinds of rows, each one evaluate.py command: a run reweighted and not,
    a run with the metadata branch, and their ensemble."""
    plain = str(ham10000_run.workdir(tmp_path_factory))
    meta = str(ham10000_run.workdir(tmp_path_factory, metadata=True))
    out = tmp_path_factory.mktemp("evaluations")
    rows = {
        "plain": ([plain], {}),
        "plain_noreweight": ([plain], {"reweight": False}),
        "meta": ([meta], {}),
        "ensemble": ([plain, meta], {"weights": [1, 3]}),
    }
    for name, (workdirs, kwargs) in rows.items():
        report.evaluate(workdirs, split="val", out_dir=str(out / name), **kwargs)
    return {name: str(out / name) for name in rows}


def test_each_row_is_its_metrics_file_and_says_what_it_evaluated(evaluations):
    rows = [table.read(path) for path in evaluations.values()]
    lines = table.markdown(rows).splitlines()
    assert lines[0] == (
        "| val (32 images) | balanced accuracy (95% CI) | recall MEL | recall NV | recall BCC "
        "| recall AKIEC | recall BKL | recall DF | recall VASC | mean ROC-AUC |"
    )
    assert len(lines) == 2 + len(rows)
    labels = [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]]
    assert labels == [
        "resnet18 32 px, reweighted, 2 views",
        "resnet18 32 px, not reweighted, 2 views",
        "resnet18 32 px + metadata, reweighted, 2 views",
        "0.25 x resnet18 32 px + 0.75 x resnet18 32 px + metadata, reweighted, 2 views",
    ]
    for row, line in zip(rows, lines[2:], strict=True):
        m = row.metrics
        cells = line.strip("| ").split(" | ")
        low, high = m["intervals_95"]["balanced_accuracy"]
        assert cells[1] == f"{m['balanced_accuracy']:.3f} ({low:.3f}-{high:.3f})"
        assert cells[2:9] == [f"{r:.3f}" for r in m["sensitivity_per_class"]]
        assert cells[9] == f"{m['roc_auc']:.3f}"
    # Reweighting moved some recall: the two rows of one run differ.
    assert lines[2].split(" | ")[1:] != lines[3].split(" | ")[1:]


def test_rows_that_scored_other_images_are_refused(evaluations, tmp_path):
    first = table.read(evaluations["plain"])
    other = tmp_path / "other"
    shutil.copytree(evaluations["meta"], other)
    metrics = json.loads((other / table.METRICS).read_text())
    (other / table.METRICS).write_text(json.dumps(metrics | {"split": "test"}))
    with pytest.raises(ValueError, match=r"other/metrics.json has split 'test'.*same images"):
        table.markdown([first, table.read(str(other))])
    (other / table.METRICS).write_text(json.dumps(metrics))
    predictions = dict(np.load(other / table.PREDICTIONS))
    predictions["ids"] = predictions["ids"][::-1]
    np.savez(other / table.PREDICTIONS, **predictions)
    with pytest.raises(ValueError, match=r"scored other images than .*plain/metrics.json"):
        table.markdown([first, table.read(str(other))])
    with pytest.raises(FileNotFoundError, match=r"eval_val/metrics.json; run scripts/evaluate"):
        table.read(str(tmp_path))


def test_the_script_prints_and_writes_the_labelled_table(evaluations, tmp_path):
    paths = [evaluations["plain"], evaluations["ensemble"]]
    out = tmp_path / "table.md"
    script = [sys.executable, str(REPO / "scripts" / "table.py")]
    args = [*paths, "--labels=alone,together", f"--out={out}"]
    result = subprocess.run([*script, *args], capture_output=True, text=True, check=True)
    assert result.stdout == out.read_text()
    assert result.stdout == table.markdown([table.read(p) for p in paths], ["alone", "together"])
    assert [line.split(" | ")[0] for line in result.stdout.splitlines()[2:]] == [
        "| alone",
        "| together",
    ]
