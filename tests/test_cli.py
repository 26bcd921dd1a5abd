"""The scripts' errors: one readable message and exit status 1, the traceback kept aside."""

import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_misspelt_config_field_is_one_line(tmp_path):
    result = _run(
        "train.py",
        "--config=configs/smoke.py",
        f"--workdir={tmp_path}",
        "--config.train.batch_sise=8",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "FATAL Flags parsing error: --config.train.batch_sise: no such config field "
        '\'batch_sise\'. Did you mean "batch_size" instead of "batch_sise"?'
    )


@pytest.mark.parametrize("verbosity", [0, 1])
def test_an_error_is_its_message_and_the_traceback_goes_to_a_file(tmp_path, verbosity):
    result = _run(
        "train.py",
        "--config=configs/smoke.py",
        f"--workdir={tmp_path / 'run'}",
        "--config.data.source=folders",
        f"--config.data.dir={tmp_path / 'missing'}",
        f"--verbosity={verbosity}",
    )
    assert result.returncode == 1
    message = f"DataError: data directory '{tmp_path / 'missing'}' does not exist"
    assert message in result.stderr
    if verbosity:  # debugging: the traceback, as Python prints it
        assert "Traceback (most recent call last)" in result.stderr
        return
    assert f"\nerror: {message}" in f"\n{result.stderr}"
    assert "Traceback" not in result.stderr
    log = re.search(r"traceback in (\S+);", result.stderr).group(1)
    assert "Traceback (most recent call last)" in pathlib.Path(log).read_text()
    pathlib.Path(log).unlink()


def test_a_script_runs_as_a_module_with_configs_that_build_on_others(tmp_path):
    """No path set-up in the scripts: `python -m scripts.x` as well as `python scripts/x.py`,
    with a config that loads another by path (configs/resnet50.py builds on asff_resnet50)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.train",
            "--config=configs/resnet50.py",
            f"--workdir={tmp_path}",
            "--config.train.batch_sise=8",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "--config.train.batch_sise: no such config field" in result.stderr


def test_every_trainer_takes_multihost():
    """`cli.run` starts every entry point through `runtime.start`, which owns --multihost."""
    for script in ("train.py", "train_cyclegan.py"):
        result = _run(script, "--helpfull")
        assert "--[no]multihost" in result.stdout, script


def test_predict_on_an_empty_folder_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _run("predict.py", f"--workdir={tmp_path}", str(tmp_path / "empty"))
    assert result.returncode == 1
    message = f"error: FileNotFoundError: {tmp_path / 'empty'}: the folder holds no files"
    assert f"\n{message}" in f"\n{result.stderr}"
    assert not result.stdout
