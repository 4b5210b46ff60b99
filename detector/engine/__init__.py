"""Training engine: optimizer and schedule (optim), weight EMA (ema), checkpoints (checkpoint), RNG (rng)."""
from detector.engine.checkpoint import (
    CHECKPOINT_KEYS,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    save_checkpoint,
)
from detector.engine.ema import ModelEMA, ema_decay, unwrap_model
from detector.engine.optim import (
    BIAS_GROUP,
    NORM_GROUP,
    WEIGHT_GROUP,
    LRSchedule,
    accumulate_steps,
    apply_lr,
    build_optimizer,
    lr_factor,
    scaled_weight_decay,
    split_parameters,
    warmup_iterations,
    warmup_values,
)
from detector.engine.rng import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "BIAS_GROUP",
    "CHECKPOINT_KEYS",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointNotFoundError",
    "LRSchedule",
    "ModelEMA",
    "NORM_GROUP",
    "WEIGHT_GROUP",
    "accumulate_steps",
    "apply_lr",
    "build_optimizer",
    "ema_decay",
    "get_rng_state",
    "load_checkpoint",
    "lr_factor",
    "save_checkpoint",
    "scaled_weight_decay",
    "seed_everything",
    "set_rng_state",
    "split_parameters",
    "unwrap_model",
    "warmup_iterations",
    "warmup_values",
]
