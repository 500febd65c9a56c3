"""Checkpoints with orbax: the whole train state plus a small JSON record, last K kept, async saves.

A checkpoint holds params, EMA params, optimiser state, step and RNG (the :class:`TrainState`),
and as JSON the data position (how many global batches were consumed) and the config, so that
`train.py` resumes from its workdir by itself and a model can be loaded for restoration from the
checkpoint folder alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A missing or unreadable checkpoint (reported as one line by the command line)."""


def make_manager(directory: str, max_to_keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Start saving (asynchronously when the manager is async); call ``manager.wait_until_finished()``
    before exiting."""
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restore the state into the structure (and shardings) of ``target``; latest step by default."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {manager.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])


def read_meta(directory: str, step: int | None = None) -> tuple[int, dict]:
    """The JSON record of a checkpoint folder without loading any array."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint folder not found: {directory}")
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    if not steps:
        raise CheckpointError(f"no checkpoint in {directory}")
    step = steps[-1] if step is None else step
    path = os.path.join(directory, str(step), "meta", "metadata")
    try:
        with open(path) as f:
            return step, json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"unreadable checkpoint record {path}: {err}") from err
