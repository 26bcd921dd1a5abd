"""Optimisers and learning-rate schedules from a stage config (optax).

Reduce-on-plateau is not part of the optax chain: it reacts to validation loss, which
exists only on the host at evaluation time, so the loop keeps a `Plateau` and the train
step multiplies every update by the state's ``lr_scale``. For SGD, Adam, AdamW and
Adadelta (all of which end in a learning-rate scale) this equals scaling the rate.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "cosine", "step")


def schedule(
    stage: ml_collections.ConfigDict, steps_per_epoch: int, num_steps: int
) -> optax.Schedule:
    """Warmup (linear from 0) then constant, cosine decay to 0, or step decay."""
    lr = stage.learning_rate
    warmup = round(stage.warmup_epochs * steps_per_epoch)
    if stage.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif stage.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
    elif stage.schedule == "step":
        every = max(round(stage.step_every_epochs * steps_per_epoch), 1)
        boundaries = {every * k: stage.step_factor for k in range(1, num_steps // every + 1)}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {stage.schedule!r}")
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def optimizer(stage: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
    name = stage.optimizer
    if name == "sgd":
        tx = optax.sgd(lr, momentum=stage.momentum or None, nesterov=stage.nesterov)
        if stage.weight_decay:  # L2 penalty, as torch.optim.SGD's weight_decay
            tx = optax.chain(optax.add_decayed_weights(stage.weight_decay), tx)
    elif name == "adam":
        tx = optax.adam(lr)
        if stage.weight_decay:
            tx = optax.chain(optax.add_decayed_weights(stage.weight_decay), tx)
    elif name == "adamw":
        tx = optax.adamw(lr, weight_decay=stage.weight_decay)
    elif name == "adadelta":
        tx = optax.adadelta(lr)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")
    if stage.clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(stage.clip_norm), tx)
    return tx


@dataclasses.dataclass
class Plateau:
    """Keras-style ReduceLROnPlateau and EarlyStopping on the validation loss."""

    factor: float
    patience: int
    stop_patience: int
    best: float = math.inf
    since_best: int = 0
    since_reduce: int = 0
    scale: float = 1.0

    def update(self, val_loss: float) -> bool:
        """Records one evaluation; returns True when the stage should stop early."""
        if val_loss < self.best:
            self.best, self.since_best, self.since_reduce = val_loss, 0, 0
        else:
            self.since_best += 1
            self.since_reduce += 1
            if self.factor and self.since_reduce >= self.patience:
                self.scale *= self.factor
                self.since_reduce = 0
        return bool(self.stop_patience) and self.since_best >= self.stop_patience
