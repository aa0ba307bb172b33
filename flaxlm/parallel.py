"""Device mesh from the config, logical-axis rules, and shardings for parameters and batches.

Mesh axes are `data`, `fsdp` and `tensor`. Modules name their parameter and activation axes
logically (`batch`, `length`, `embed`, `mlp`, `heads`, `kv`, `vocab`); `config.mesh.rules` maps
those names to mesh axes, so a config changes the parallelism without touching model code.
"""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes; a -1 axis takes the devices the others leave."""
  sizes = [mesh_config.data, mesh_config.fsdp, mesh_config.tensor]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh: {num_devices} devices cannot be split with fixed axes of size {known} "
                       f"(data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]})")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh: data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} "
                     f"does not match the {num_devices} devices available")
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
  """The (data, fsdp, tensor) mesh over all devices (or `devices`)."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def axis_rules(mesh_config) -> tuple:
  """The logical-name -> mesh-axes rules as flax expects them."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in mesh_config.rules)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules):
  """Mesh and rules active while tracing, so logical activation constraints resolve."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_sharding(boxed_tree, mesh: Mesh, rules):
  """NamedShardings for a tree whose leaves may carry logical names (nn.Partitioned); others replicate."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Rows of a [B, ...] batch split over the mesh axes the `batch` rule names."""
  spec = nn.logical_to_mesh_axes(("batch",), rules)
  return NamedSharding(mesh, PartitionSpec(spec[0]))


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles the global batch from each process's rows (each process passes its own slice)."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated sharding on the mesh."""
  return NamedSharding(mesh, PartitionSpec())
