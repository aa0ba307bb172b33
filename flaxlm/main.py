"""Entry point: `python -m flaxlm.main --config experiments/NAME.py[:args] --workdir DIR [--config.a.b=v]`.

A workdir that holds a checkpoint resumes from it. Multi-host runs (several processes, e.g. the
workers of a TPU VM slice) call `jax.distributed.initialize()` first; on a single process it is
skipped.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. experiments/demo.py:smoke.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
_MULTIHOST = flags.DEFINE_bool("multihost", None, "Call jax.distributed.initialize(); default: when a cluster "
                               "environment (TPU VM slice, SLURM, or JAX_COORDINATOR_ADDRESS) is detected, or "
                               "--coordinator_address is given.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a cluster JAX does not "
                                   "detect by itself (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])

# Exit status after a preemption signal: the run saved its checkpoint and can be resumed.
EXIT_INTERRUPTED = 143


def _looks_multihost() -> bool:
  env = os.environ
  return bool(env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("SLURM_NTASKS", "1")) > 1
              or "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # Imported after flags so --help is fast.

  from flaxlm.config import ConfigError
  from flaxlm.train.checkpoint import CheckpointError
  from flaxlm.train.loop import Interrupted, NonFiniteError, run

  multihost = _MULTIHOST.value if _MULTIHOST.value is not None else (_looks_multihost() or bool(_COORDINATOR.value))
  if multihost:
    # CPU processes (tests, laptops) exchange collectives over gloo; accelerators ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  # Keep the console for the run: absl would echo JAX's backend probing and TFDS's notices.
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    sys.exit(f"flaxlm: config error: {e}")
  except (CheckpointError, NonFiniteError) as e:
    # A failed asynchronous save leaves futures whose errors asyncio would log while the interpreter
    # exits, after our message; the message already names the error.
    logging.getLogger("asyncio").disabled = True
    sys.exit(f"flaxlm: {e}")
  except (OSError, ValueError) as e:
    sys.exit(f"flaxlm: {type(e).__name__}: {e}")
  except Interrupted as e:
    print(f"flaxlm: {e}", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad --config override (an unknown key, a wrong type) as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"flaxlm: config error: {e}\nPass --helpshort to see the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections reports an unknown --config.a.b key as an AttributeError or KeyError.
    message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    sys.exit(f"flaxlm: config error: {message}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
