"""Checkpoints through orbax's CheckpointManager: train state plus each process's data position.

Saves are asynchronous (the step loop goes on while arrays are written); only a checkpoint whose
write finished is ever listed or restored, so a crash mid-write loses nothing committed.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from grain.checkpoint import CheckpointRestore, CheckpointSave


class _IteratorStateSnapshot:
  """The data iterator's state frozen at save time, in the shape grain's orbax handler writes.

  grain's handler reads `get_state()` when the save runs; handing it a snapshot keeps the saved
  position equal to the saved step even while the loop moves the live iterator on.
  """

  def __init__(self, state: dict | None = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


class Checkpointer:
  """Save, list and restore checkpoints under `WORKDIR/checkpoints/STEP/`."""

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest committed step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All committed steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, data_state: dict) -> None:
    """Starts saving `state` and the data position at `step` (returns before arrays are written)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=CheckpointSave(_IteratorStateSnapshot(data_state)))
    self._manager.save(step, args=args, force=True)

  def restore(self, step: int, abstract_state):
    """(state, data_state) at `step`; arrays land with the shardings in `abstract_state`."""
    snapshot = _IteratorStateSnapshot()
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=CheckpointRestore(snapshot)))
    return restored["state"], snapshot.state

  def wait(self) -> None:
    """Blocks until every started save is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def save_params(directory: str, params, step: int = 0) -> None:
  """Writes `params` as a params-only checkpoint under `directory/checkpoints/STEP/`.

  With a config.json and a vocab beside it, `directory` is a model directory that
  `--config.init_from` and the exporter read exactly like a training workdir.
  """
  options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
  with ocp.CheckpointManager(os.path.join(os.path.abspath(directory), "checkpoints"), options=options) as manager:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params})), force=True)
    manager.wait_until_finished()


def load_params(directory: str, abstract_params):
  """The params of the newest checkpoint under `directory/checkpoints/` (a workdir or a saved model).

  `abstract_params` (ShapeDtypeStructs, with shardings) says what to read and where it lands;
  optimizer state and everything else in the checkpoint is left unread.
  """
  path = os.path.join(os.path.abspath(directory), "checkpoints")
  with ocp.CheckpointManager(path) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {path}")
    target = {"params": abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
  return restored["state"]["params"]


def params_metadata(directory: str) -> dict:
  """ShapeDtypeStructs of the params in the newest checkpoint under `directory/checkpoints/`, unread.

  The tree comes from the checkpoint's metadata, so any task's params can be read without
  building its model.
  """
  path = os.path.join(os.path.abspath(directory), "checkpoints")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoints/ in {directory}: is it a flaxlm workdir or model directory?")
  with ocp.CheckpointManager(path, item_handlers={"state": ocp.StandardCheckpointHandler()}) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no finished checkpoint in {path}")
    metadata = dict(manager.item_metadata(step)["state"])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), metadata["params"])


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of `tree` carrying `shardings`: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
