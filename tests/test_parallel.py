"""Scale-out on 8 simulated CPU devices: meshes, pmap, parameter shardings, two real processes,
and restoring a checkpoint onto another mesh."""

import copy
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from flaxlm import config as config_lib
from flaxlm.train import loop
from flaxlm.train.checkpoint import Checkpointer
from flaxlm.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10


@pytest.fixture(scope="module")
def parallel_config(tiny_config):
  """The tiny run without dropout (pmap draws dropout per device), a loss logged every step."""
  c = copy.deepcopy(tiny_config)
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  c.train.update(num_steps=STEPS, log_every=1, checkpoint_every=0, eval_max_batches=1)
  c.data.shards = 2  # Identical batches whether one process or two read them.
  return c


def _losses(workdir):
  return np.array([r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r])


def _run_in_subprocess(config, workdir, devices, processes=1):
  """loop.run in fresh processes with `devices` CPU devices each (several: jax.distributed over loopback)."""
  config_path = os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + ".json")
  with open(config_path, "w", encoding="utf-8") as f:
    f.write(config_lib.to_json(config))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  script = (
      "import sys, jax\n"
      "if int(sys.argv[2]) > 1:\n"
      "  jax.config.update('jax_cpu_collectives_implementation', 'gloo')\n"
      f"  jax.distributed.initialize(coordinator_address='127.0.0.1:{port}', num_processes=int(sys.argv[2]),"
      " process_id=int(sys.argv[1]))\n"
      "from flaxlm import config as config_lib\nfrom flaxlm.train import loop\n"
      f"config = config_lib.from_json(open({config_path!r}).read())\n"
      f"loop.run(config, {workdir!r})\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(processes)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
  for proc in procs:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def single_device_losses(parallel_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("single") / "w")
  _run_in_subprocess(parallel_config, workdir, devices=1)
  losses = _losses(workdir)
  assert len(losses) == STEPS
  return losses


@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 4, 2), "pmap"])
def test_meshes_and_pmap_give_the_single_device_losses(parallel_config, single_device_losses, tmp_path, mesh):
  c = copy.deepcopy(parallel_config)
  if mesh == "pmap":
    c.parallelism = "pmap"
  else:
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  loop.run(c, str(tmp_path))
  np.testing.assert_allclose(_losses(str(tmp_path)), single_device_losses, rtol=2e-5)


def test_two_processes_give_the_single_process_losses(parallel_config, single_device_losses, tmp_path):
  workdir = str(tmp_path / "w")
  _run_in_subprocess(parallel_config, workdir, devices=4, processes=2)
  np.testing.assert_allclose(_losses(workdir), single_device_losses, rtol=2e-5)
  # Process 0 alone wrote metrics; both processes' data positions are in the checkpoint.
  data = os.path.join(workdir, "checkpoints", str(STEPS), "data")
  assert sorted(os.listdir(data)) == ["commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


def _bytes_per_device(run):
  per_device = {}
  for leaf, sharding in zip(jax.tree.leaves(run.abstract_state.params), jax.tree.leaves(run.state_shardings.params)):
    for device, index in sharding.devices_indices_map(leaf.shape).items():
      size = np.prod([len(range(*i.indices(n))) for i, n in zip(index, leaf.shape)]) if index else 1
      per_device[device] = per_device.get(device, 0) + size * leaf.dtype.itemsize
  return max(per_device.values())


def test_parameter_shardings_follow_the_rules(tiny_config, tmp_path):
  c = copy.deepcopy(tiny_config)
  c.model.update(hidden_size=64, num_heads=4, mlp_dim=128)
  sizes = {}
  for mesh in [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 4, 2), (1, 8, 1)]:
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
    run = loop.Run(c, str(tmp_path / "w"))
    sizes[mesh] = _bytes_per_device(run)
    if mesh[1] > 1:  # Under FSDP no large matrix is whole on any device.
      for path, leaf in jax.tree_util.tree_flatten_with_path(run.abstract_state.params)[0]:
        if leaf.ndim >= 2 and leaf.size >= 64 * 64:
          assert not leaf.sharding.is_fully_replicated, jax.tree_util.keystr(path)
  full = sizes[(8, 1, 1)]
  for mesh, size in sizes.items():
    model_parallel = mesh[1] * mesh[2]
    # Bytes per device fall with fsdp x tensor; small vectors that stay replicated keep it a bit above.
    assert full / model_parallel <= size <= full / model_parallel * 1.25, (mesh, size, full)


def test_checkpoint_restores_onto_another_mesh(tiny_config, tmp_path):
  workdir = str(tmp_path / "w")
  c = copy.deepcopy(tiny_config)
  c.train.update(num_steps=4, checkpoint_every=4)
  loop.run(c, workdir)  # Saved from the default 8-way data-parallel mesh.
  checkpoints = Checkpointer(workdir, keep=3)
  reference, _ = checkpoints.restore(4, loop.Run(c, workdir).abstract_state)
  for devices, shape in [(jax.devices(), (2, 2, 2)), (jax.devices()[:4], (1, 4, 1))]:
    target = copy.deepcopy(c)
    target.mesh.data, target.mesh.fsdp, target.mesh.tensor = shape
    abstract = loop.Run(target, workdir, devices=devices).abstract_state
    restored, _ = checkpoints.restore(4, abstract)
    for want, got, spec in zip(jax.tree.leaves(reference), jax.tree.leaves(restored), jax.tree.leaves(abstract)):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
      assert got.sharding == spec.sharding and got.sharding.device_set == set(devices)
  checkpoints.close()


def test_cli_runs_demo_smoke_with_fsdp_and_tensor_parallelism(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  result = subprocess.run([sys.executable, "-m", "flaxlm.main", "--config", "experiments/demo.py:smoke", "--workdir",
                           str(tmp_path), "--config.mesh.fsdp=4", "--config.mesh.tensor=2",
                           "--config.train.num_steps=10", "--config.train.progress_bar=false"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 2}" in result.stdout + result.stderr


def test_per_device_batch_size_scales_the_global_batch(tiny_config, tmp_path):
  c = copy.deepcopy(tiny_config)
  c.train.per_device_batch_size = 3
  assert loop.Run(c, str(tmp_path)).global_batch_size == 3 * 8
  c.mesh.data, c.mesh.tensor = 4, 2  # Tensor-parallel pairs share their rows: 4 data-parallel groups.
  assert loop.Run(c, str(tmp_path)).global_batch_size == 3 * 4
