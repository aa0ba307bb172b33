"""Checkpoints through orbax's CheckpointManager: train state plus each process's data position.

Saves are asynchronous (the step loop goes on while arrays are written); only a checkpoint whose
write finished is ever listed or restored, so a crash mid-write loses nothing committed.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
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


class CheckpointError(Exception):
  """A checkpoint could not be written or read; the message names the step and what to do."""


class Checkpointer:
  """Save, list and restore checkpoints under `WORKDIR/checkpoints/STEP/`.

  A write that a crash cut short stays a temporary directory that is never listed, and is
  cleaned up when the next run opens the workdir.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest committed step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All committed steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, data_state: dict) -> None:
    """Starts saving `state` and the data position at `step` (returns before arrays are written).

    A failure of this or the previous (asynchronous) save raises CheckpointError.
    """
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=CheckpointSave(_IteratorStateSnapshot(data_state)),
                              fingerprint=ocp.args.JsonSave(fingerprint(state)))
    try:
      self._manager.save(step, args=args, force=True)
    except Exception as e:  # noqa: BLE001  (orbax and tensorstore raise many types; all mean the same here)
      raise self._save_failed(step, e) from e

  def wait(self) -> None:
    """Blocks until every started save is committed; raises CheckpointError if one failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_failed(None, e) from e

  def _save_failed(self, step, error) -> CheckpointError:
    self._manager.reload()
    committed = self.all_steps()
    kept = f"committed checkpoints {committed} are intact" if committed else "no checkpoint was committed yet"
    at = f"at step {step} " if step is not None else ""
    return CheckpointError(f"saving a checkpoint {at}in {self.directory} failed ({type(error).__name__}: {error}); "
                           f"{kept}; free disk space and rerun the same command to resume")

  def restore(self, step: int, abstract_state):
    """(state, data_state) at `step`; arrays land with the shardings in `abstract_state`.

    The restored arrays must match the fingerprint saved with them, so a file damaged in a way the
    reader does not notice still fails here rather than resuming from corrupt values.
    """
    snapshot = _IteratorStateSnapshot()
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=CheckpointRestore(snapshot),
        fingerprint=ocp.args.JsonRestore()))
    expected, actual = restored["fingerprint"], fingerprint(restored["state"])
    if len(expected) != len(actual) or not np.allclose(expected, actual, rtol=1e-5, atol=1e-6, equal_nan=True):
      raise ValueError("restored arrays do not match the fingerprint saved with them")
    return restored["state"], snapshot.state

  def restore_latest(self, abstract_state, policy: str, log):
    """(step, state, data_state) of the newest checkpoint that loads, or None when there is none.

    A checkpoint that fails to load is named; with policy "fallback" it is moved to
    WORKDIR/damaged_checkpoints/STEP (kept for inspection, never deleted) and the previous one is
    tried; with "fail", or when every checkpoint is damaged, CheckpointError stops the run:
    a workdir with checkpoints never silently starts from scratch.
    """
    steps = self.all_steps()
    damaged_dir = os.path.join(self.workdir, "damaged_checkpoints")
    if not steps and os.path.isdir(damaged_dir) and os.listdir(damaged_dir):
      raise CheckpointError(f"{self.directory} holds no loadable checkpoint, only damaged ones in {damaged_dir}. "
                            "Refusing to start from scratch over them: use a new workdir, or move that folder "
                            "away to restart on purpose")
    for step in reversed(steps):
      try:
        return (step, *self.restore(step, abstract_state))
      except Exception as e:  # noqa: BLE001  (any failure to read means the same: damaged)
        problem = f"the checkpoint at step {step} ({self.directory}/{step}) is damaged: {type(e).__name__}: {e}"
        if policy != "fallback":
          raise CheckpointError(f"{problem}. Set --config.train.on_damaged_checkpoint=fallback to resume from "
                                "the previous checkpoint instead") from e
        moved = os.path.join(damaged_dir, str(step))
        os.makedirs(os.path.dirname(moved), exist_ok=True)
        os.replace(os.path.join(self.directory, str(step)), moved)
        self._manager.reload()
        log(f"WARNING: {problem}; moved it to {moved} and falling back to the previous checkpoint.")
    if steps:
      raise CheckpointError(f"every checkpoint in {self.directory} ({steps}) is damaged; they were moved to "
                            f"{damaged_dir}. Refusing to start from scratch over them: "
                            "use a new workdir, or move that folder away to restart on purpose")
    return None

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    try:
      self.wait()
    finally:
      self._manager.close()


@jax.jit
def _sums(leaves):
  return jnp.stack([jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32)))])
                    for x in leaves])


def fingerprint(state) -> list[list[float]]:
  """[sum, sum of squares] of every array of `state`: cheap to compute, and any damage to a
  restored array's values shows in it."""
  leaves = [x for x in jax.tree.leaves(state) if hasattr(x, "dtype") and x.size]
  return np.asarray(_sums(leaves), np.float64).tolist() if leaves else []


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
