"""What every script's ``main`` runs under: errors as one readable message, not a traceback.

Users of the scripts need the message (a file, a line, a config key and the fix); the
20 to 50 lines of stack above it bury it. `run` prints ``error: <message>`` and exits 1,
and keeps the traceback in a file named beside the message; ``--verbosity=1`` shows it
as it happens instead. A misspelt ``--config.x`` field is one line naming the flag and
the field ml_collections suggests.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from skinjax import host_memory, runtime


def _field_error(error: BaseException, argv: Sequence[str]) -> str | None:
    """The message of a config override naming no field, or None for any other error."""
    while error is not None and not (isinstance(error, KeyError) and error.args):
        error = error.__context__
    if error is None or not isinstance(error.args[0], str):
        return None
    field, _, hint = error.args[0].partition("\n")
    field = field.strip("'\"")
    flag = next((a.split("=")[0] for a in argv[1:] if a.split("=")[0].endswith(f".{field}")), field)
    return f"{flag}: no such config field {field!r}. {hint}".strip()


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:  # ml_collections, for an unknown --config.x field
        message = _field_error(e, argv)
        if message is None:
            raise
        sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
        sys.exit(1)


def _message(error: Exception) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _guarded(main: Callable[[list[str]], int | None], argv: list[str]) -> int | None:
    try:
        runtime.start()
        return main(argv)
    except app.UsageError:  # absl prints it with the usage
        raise
    except Exception as e:
        if logging.level_debug():  # --verbosity=1: the traceback, as it happens
            raise
        name = os.path.splitext(os.path.basename(argv[0]))[0]
        path = os.path.join(tempfile.gettempdir(), f"skinjax-{name}-{os.getpid()}.log")
        with open(path, "w") as f:
            traceback.print_exc(file=f)
        print(
            f"error: {_message(e)}\n(traceback in {path}; --verbosity=1 shows it)",
            file=sys.stderr,
        )
        return 1


def train(train_and_evaluate: Callable[[ml_collections.ConfigDict, str], Any]) -> None:
    """A training script: --config and --workdir, then ``train_and_evaluate(config, workdir)``
    under `run`. Every trainer is this, so each resumes, locks and starts alike."""
    config = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
    workdir = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv: list[str]) -> None:
        del argv
        logging.info("devices: %s", jax.devices())
        train_and_evaluate(config.value, workdir.value)

    run(main)


def run(main: Callable[[list[str]], int | None]) -> None:
    """`absl.app.run` for a script's ``main``: restarts the process with malloc's faster
    settings (`host_memory.restart_with_fast_malloc`, unless the script did so before its
    imports, where it costs less), parses flags, sets the process up
    (`runtime.start`: ``--multihost`` and the rest), runs, exits with its status."""
    host_memory.restart_with_fast_malloc()
    app.run(functools.partial(_guarded, main), flags_parser=_parse_flags)


@dataclasses.dataclass(frozen=True)
class ProtocolFlags:
    """The evaluation protocol's flags, which evaluate.py and predict.py share."""

    ensemble: flags.FlagHolder
    weights: flags.FlagHolder
    rotations: flags.FlagHolder
    reweight: flags.FlagHolder

    def values(self) -> dict:
        """Keyword arguments of `report.evaluate` and `predict.from_workdirs`."""
        return {
            "weights": float_list(self.weights),
            "rotations": self.rotations.value,
            "reweight": self.reweight.value,
        }


def float_list(holder: flags.FlagHolder) -> list[float] | None:
    return None if holder.value is None else [float(w) for w in holder.value]


def define_ensemble_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    """--ensemble (more work directories beside --workdir) and --ensemble_weights."""
    return (
        flags.DEFINE_list("ensemble", [], "More work directories to average with."),
        flags.DEFINE_list(
            "ensemble_weights", None, "One weight per work directory, W first (default: equal)."
        ),
    )


def define_protocol_flags() -> ProtocolFlags:
    ensemble, weights = define_ensemble_flags()
    return ProtocolFlags(
        ensemble=ensemble,
        weights=weights,
        rotations=flags.DEFINE_integer(
            "tta_rotations",
            1,
            "1, or 4: average the quarter turns at test time (eight views with flips).",
        ),
        reweight=flags.DEFINE_bool(
            "reweight",
            None,
            "Divide the probabilities by the training class frequencies (default: the run's "
            "eval.reweight_by_inverse_frequency).",
        ),
    )
