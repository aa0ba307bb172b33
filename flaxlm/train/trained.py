"""A trained run, loaded for inference: its config, task and best (or newest) params.

Shared by the command-line tools (`flaxlm.predict`, `flaxlm.generate`), which define their own flags.
"""

from __future__ import annotations

import os
import sys


def load_trained(workdir: str):
  """(config, task, params): the best checkpoint of `workdir` when it keeps one, else the newest."""
  import jax

  from flaxlm import config as config_lib
  from flaxlm.train.checkpoint import load_params
  from flaxlm.train.loop import Run

  config_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path} not found: is {workdir} a flaxlm workdir?")
  with open(config_path, encoding="utf-8") as f:
    config = config_lib.from_json(f.read())
  config.unlock()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1  # Inference needs no model parallelism.
  config.init_from = ""  # The workdir's own checkpoints hold every parameter.
  config.lock()
  run = Run(config, workdir)
  best = os.path.join(workdir, "best")
  source = best if os.path.isdir(os.path.join(best, "checkpoints")) else workdir
  params = load_params(source, run.abstract_state.params)
  print(f"flaxlm: {'best checkpoint' if source == best else 'newest checkpoint'} of {workdir}",
        file=sys.stderr)
  return config, run.task, jax.device_get(params)
