"""Launch scripts: the exact gcloud, sbatch and per-task commands they print with --dry-run (no cloud here)."""

import os
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_VM = os.path.join(ROOT, "launch", "tpu_vm.sh")
SLURM = os.path.join(ROOT, "launch", "slurm.sh")
# Arguments a user would give flaxlm, one with spaces, quotes and brackets to test the quoting.
FLAXLM_ARGS = ["--config", "experiments/bert_base_mlm.py:phase=1", "--workdir", "/mnt/shared/runs/bert base",
               "--config.task.fill_mask_examples=(\"it's a [MASK].\",)", "--config.train.batch_size=1024"]


def _script(path, *args, env=None):
  result = subprocess.run(["bash", path, *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})})
  return result


def _dry_run(path, verb, *args, env=None) -> list[list[str]]:
  """Each printed command as argv words."""
  result = _script(path, verb, "--dry-run", *args, env=env)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.strip().splitlines()]


def _remote(argv: list[str]) -> list[str]:
  """The words of the --command a gcloud ssh line runs on the workers."""
  [command] = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return shlex.split(command)


@pytest.mark.parametrize("verb,module", [("run", "flaxlm.main"), ("sweep", "flaxlm.sweep")])
def test_tpu_vm_run_starts_the_same_flaxlm_command_on_every_worker(verb, module):
  [argv] = _dry_run(TPU_VM, verb, "--name", "pod", "--zone", "us-central2-b", "--project", "proj",
                    "--env", "TFDS_DATA_DIR=/mnt/shared/tfds", "--", *FLAXLM_ARGS)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert {"--zone=us-central2-b", "--project=proj", "--worker=all"} <= set(argv)
  remote = _remote(argv)
  assert remote[:3] == ["cd", "~/flaxlm", "&&"]
  assert remote[3:6] == ["export", "TFDS_DATA_DIR=/mnt/shared/tfds", "&&"]
  start = remote.index("-m")
  assert remote[start - 2:start + 2] == ["nohup", ".venv/bin/python", "-m", module]
  assert remote[start + 2:start + 2 + len(FLAXLM_ARGS)] == FLAXLM_ARGS  # Word for word, quotes and all.
  assert remote[start + 2 + len(FLAXLM_ARGS):] == [">", "~/flaxlm.log", "2>&1", "<", "/dev/null", "&"]


def test_tpu_vm_lifecycle_commands():
  [create] = _dry_run(TPU_VM, "create", "--name", "pod", "--zone", "z", "--accelerator-type", "v4-32", "--spot")
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod", "--zone=z", "--accelerator-type=v4-32",
                    "--version=tpu-ubuntu2204-base", "--spot"]
  archive, copy, install = _dry_run(TPU_VM, "setup", "--name", "pod", "--zone", "z")
  assert archive[:2] == ["tar", "-czf"] and archive[-3:] == ["-C", ROOT, "."]
  assert copy[4] == "scp" and "--worker=all" in copy and copy[-3].startswith("pod:")
  assert "--worker=all" in install and ".[tpu]" in _remote(install)
  [logs] = _dry_run(TPU_VM, "logs", "--name", "pod", "--zone", "z", "--worker", "3")
  assert "--worker=3" in logs and _remote(logs) == ["tail", "-n", "200", "-f", "~/flaxlm.log"]
  [delete] = _dry_run(TPU_VM, "delete", "--name", "pod", "--zone", "z")
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod", "--zone=z", "--quiet"]
  # Name and zone from the environment, as the header says.
  [delete] = _dry_run(TPU_VM, "delete", env={"TPU_NAME": "envpod", "TPU_ZONE": "envzone"})
  assert delete[5:7] == ["envpod", "--zone=envzone"]


def test_tpu_vm_refuses_what_it_cannot_run():
  assert "--name" in _script(TPU_VM, "run", "--zone", "z", "--dry-run", "--", "--config", "x").stderr
  assert "after --" in _script(TPU_VM, "run", "--name", "n", "--zone", "z", "--dry-run").stderr
  assert _script(TPU_VM, "explode", "--name", "n", "--zone", "z").returncode == 2
  assert _script(TPU_VM, "run", "--name", "n", "--zone", "z", "--config", "x").returncode == 2


@pytest.mark.parametrize("nodelist,host", [("gpu07", "gpu07"), ("gpu07,gpu09", "gpu07"), ("node[001-004]", "node001"),
                                           ("gpu[03-04,07],cpu1", "gpu03")])
def test_slurm_task_takes_the_coordinator_from_the_slurm_environment(nodelist, host):
  env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": nodelist, "SLURM_NTASKS": "16", "SLURM_PROCID": "5"}
  [argv] = _dry_run(SLURM, "task", "--", *FLAXLM_ARGS, env=env)
  # The port comes from the job id, so every task of the job agrees on it without talking.
  assert argv[0] == f"JAX_COORDINATOR_ADDRESS={host}:{20000 + 4242 % 20000}"
  assert argv[1:4] == [os.path.join(ROOT, ".venv", "bin", "python"), "-m", "flaxlm.main"]
  assert argv[4:] == FLAXLM_ARGS
  [argv] = _dry_run(SLURM, "task", "--", "--config", "x", env={**env, "JAX_COORDINATOR_PORT": "1234"})
  assert argv[0] == f"JAX_COORDINATOR_ADDRESS={host}:1234"


def test_slurm_task_outside_slurm_and_submit():
  outside = _script(SLURM, "task", "--dry-run", "--", "--config", "x")
  assert outside.returncode == 2 and "SLURM_JOB_ID is not set" in outside.stderr
  [argv] = _dry_run(SLURM, "submit", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--time",
                    "2:00:00", "--", *FLAXLM_ARGS)
  assert argv[0] == "sbatch"
  assert {"--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=2:00:00"} <= set(argv)
  assert f"--export=ALL,FLAXLM_DIR={ROOT},FLAXLM_MODULE=flaxlm.main" in argv
  job = argv.index(os.path.join(ROOT, "launch", "slurm.sh"))
  assert argv[job + 1:] == ["job", *FLAXLM_ARGS]
  [argv] = _dry_run(SLURM, "submit", "--module", "flaxlm.sweep", "--", "--config", "x", "--workdir-root", "w")
  assert f"--export=ALL,FLAXLM_DIR={ROOT},FLAXLM_MODULE=flaxlm.sweep" in argv
  assert _script(SLURM, "submit", "--module", "os", "--dry-run", "--", "x").returncode == 2


@pytest.mark.parametrize("path", [TPU_VM, SLURM])
def test_scripts_parse_and_print_their_usage(path):
  assert subprocess.run(["bash", "-n", path]).returncode == 0
  usage = _script(path, "--help")
  assert usage.returncode == 0 and "--dry-run" in usage.stdout and not usage.stdout.startswith("!")
