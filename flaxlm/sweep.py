"""Sweeps: run every point of an experiment's grid in its own workdir, then tabulate and plot them.

  python -m flaxlm.sweep --config experiments/NAME.py[:ARGS] --workdir-root DIR [--parallel N] [--dry-run]
      [--config.KEY=VALUE ...]

An experiment file's `get_sweep(arg=None)` (given the same ARGS as `get_config`) returns the grid: a
list of points, each a dict of config overrides such as {"model.pre_layer_norm": True}, built with
`axis`, `product` and `zipped` below (lists concatenate with +). Each point runs
`python -m flaxlm.main` in DIR/NAME, where NAME spells the point's values
(`pre_layer_norm=True,warmup_steps=0`). A point whose workdir holds its final checkpoint is skipped;
an unfinished one resumes, since flaxlm.main resumes from a workdir's newest checkpoint. At the end
DIR holds results.csv and results.md (one row per point: its values and final metrics) and
curves.png (the train and eval curves of every point). `--config.KEY=VALUE` applies to every point.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import csv
import dataclasses
import importlib.util
import inspect
import io
import itertools
import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import flaxlm

# ----------------------------------------------------------------------------- grids


def axis(key: str, values) -> list[dict]:
  """One config key over several values: [{key: v} for each v]."""
  values = list(values)
  if not values:
    raise ValueError(f"sweep axis {key!r} has no values")
  return [{key: value} for value in values]


def product(*grids: list[dict]) -> list[dict]:
  """Every combination of one point from each grid (the first grid varies slowest)."""
  out = []
  for parts in itertools.product(*grids):
    out.append(_merge(parts))
  return out


def zipped(*grids: list[dict]) -> list[dict]:
  """The i-th points of equally long grids, merged: values that change together."""
  lengths = {len(g) for g in grids}
  if len(lengths) > 1:
    raise ValueError(f"zipped grids must be equally long, got lengths {[len(g) for g in grids]}")
  return [_merge(parts) for parts in zip(*grids)]


def _merge(parts) -> dict:
  merged: dict = {}
  for part in parts:
    shared = set(merged) & set(part)
    if shared:
      raise ValueError(f"sweep key(s) {sorted(shared)} set twice in one point")
    merged.update(part)
  return merged


# ----------------------------------------------------------------------------- points


@dataclasses.dataclass
class Point:
  """One run of the sweep: its overrides, workdir, command and config."""

  name: str
  values: dict
  workdir: str
  command: list[str]
  config: object = dataclasses.field(repr=False)

  @property
  def num_steps(self) -> int:
    return int(self.config.train.num_steps)


def load_experiment(spec: str):
  """(module, arg) for `experiments/NAME.py[:ARGS]`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--config: experiment file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module, arg or None


def grid_of(module, arg):
  """The experiment's grid; one point with no overrides when it defines no get_sweep."""
  if not hasattr(module, "get_sweep"):
    return [{}]
  takes_arg = bool(inspect.signature(module.get_sweep).parameters)
  grid = module.get_sweep(arg) if takes_arg else module.get_sweep()
  if not grid or not all(isinstance(p, dict) for p in grid):
    raise ValueError(f"get_sweep() of {module.__file__} must return a non-empty list of dicts, got {grid!r}")
  return grid


def format_value(value) -> str:
  """A value as `--config.KEY=` parses it back (and as point names show it)."""
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def short_keys(grid: list[dict]) -> dict[str, str]:
  """{config key: its last part, or the whole key where two keys share the last part}, in grid order."""
  keys = list(dict.fromkeys(k for point in grid for k in point))
  last = [k.rsplit(".", 1)[-1] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def point_names(grid: list[dict]) -> list[str]:
  """`key=value,...` per point (keys as `short_keys` gives them)."""
  short = short_keys(grid)
  keys = list(short)
  names = []
  for point in grid:
    name = ",".join(f"{short[k]}={format_value(point[k])}" for k in keys if k in point) or "default"
    names.append(re.sub(r"[^A-Za-z0-9._=,+-]+", "_", name))
  if len(set(names)) != len(names):
    raise ValueError(f"sweep points are not distinct: {names}")
  return names


def parse_override(flag: str) -> tuple[str, str]:
  """`--config.a.b=value` -> ("a.b", "value")."""
  body = flag[len("--config."):] if flag.startswith("--config.") else None
  key, sep, value = (body or "").partition("=")
  if not body or not sep or not key:
    raise ValueError(f"expected --config.KEY=VALUE, got {flag!r}")
  return key, value


def _typed(current, text: str):
  """`text` converted to the type of the config value it replaces."""
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"{text!r} is not a boolean")
    return text.lower() in ("true", "1")
  if isinstance(current, (int, float, tuple)) or current is None:
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    return float(value) if isinstance(current, float) and isinstance(value, int) else value
  return text


def point_config(module, arg, values: dict, overrides: list[tuple[str, str]]):
  """The point's config: the experiment's, with the command-line overrides, then the point's values."""
  from flaxlm import config as config_lib
  c = module.get_config(arg)
  for key, text in overrides:
    _set(c, key, lambda current, t=text: _typed(current, t), config_lib)
  for key, value in values.items():
    _set(c, key, lambda current, v=value: v, config_lib)
  return c


def _set(c, key: str, make_value, config_lib) -> None:
  *parents, leaf = key.split(".")
  node = c
  try:
    for part in parents:
      node = node[part]
    current = node[leaf]
    node[leaf] = make_value(current)
  except (KeyError, AttributeError) as e:
    raise config_lib.ConfigError(f"config.{key}: no such config key ({e})") from None
  except (TypeError, ValueError) as e:
    raise config_lib.ConfigError(f"config.{key}: {e}") from None


def plan(spec: str, root: str, flags: list[str]) -> list[Point]:
  """The sweep's points, in grid order."""
  module, arg = load_experiment(spec)
  grid = grid_of(module, arg)
  overrides = [parse_override(f) for f in flags]
  points = []
  for name, values in zip(point_names(grid), grid):
    c = point_config(module, arg, values, overrides)
    workdir = os.path.join(root, name)
    command = [sys.executable, "-m", "flaxlm.main", "--config", spec, "--workdir", workdir, *flags,
               *(f"--config.{k}={format_value(v)}" for k, v in values.items())]
    points.append(Point(name, values, workdir, command, c))
  return points


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the committed checkpoints in a workdir (orbax renames a finished save to its step)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def is_finished(point: Point) -> bool:
  """Whether the point's workdir holds a checkpoint at (or past) its last step."""
  steps = checkpoint_steps(point.workdir)
  return bool(steps) and steps[-1] >= point.num_steps


# ----------------------------------------------------------------------------- running


def run_point(point: Point, index: int, total: int, log=print) -> int:
  """Runs (or resumes) one point, its console output appended to WORKDIR/sweep.log; the exit status."""
  os.makedirs(point.workdir, exist_ok=True)
  log_path = os.path.join(point.workdir, "sweep.log")
  resumed = f" (resuming at step {checkpoint_steps(point.workdir)[-1]})" if checkpoint_steps(point.workdir) else ""
  log(f"[{index}/{total}] {point.name}: started{resumed}")
  start = time.perf_counter()
  with open(log_path, "a", encoding="utf-8") as out:
    out.write(f"$ {shlex.join(point.command)}\n")
    out.flush()
    status = subprocess.run(point.command, stdout=out, stderr=subprocess.STDOUT, env=flaxlm.subprocess_env(),
                            check=False).returncode
  elapsed = time.perf_counter() - start
  if status == 0:
    log(f"[{index}/{total}] {point.name}: done in {elapsed:.0f} s")
  else:
    with open(log_path, encoding="utf-8") as f:
      tail = "".join(f.readlines()[-5:])
    log(f"[{index}/{total}] {point.name}: FAILED with exit status {status} after {elapsed:.0f} s; "
        f"last lines of {log_path}:\n{tail}")
  return status


def run_sweep(points: list[Point], parallel: int, log=print) -> dict[str, int]:
  """Runs the unfinished points, `parallel` at a time; {name: exit status} of those it ran."""
  pending = [p for p in points if not is_finished(p)]
  done = len(points) - len(pending)
  log(f"flaxlm.sweep: {len(points)} point(s), {done} already finished, {len(pending)} to run "
      f"({parallel} at a time)")
  statuses = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
    futures = {pool.submit(run_point, p, i + 1, len(pending), log): p for i, p in enumerate(pending)}
    for future in concurrent.futures.as_completed(futures):
      statuses[futures[future].name] = future.result()
  return statuses


# ----------------------------------------------------------------------------- results

# Metrics that describe the evaluation rather than the model; kept in results.csv only.
_CSV_ONLY = re.compile(r"(/num_|/learning_rate$|/target_counts$|^perf/(?!tokens_per_sec$))")
# Curves worth plotting: the loss, the model's scores, and (train only) the gradient norm.
_PLOTTED = re.compile(r"^(loss|(?!majority_).*accuracy|f1|exact_match|matthews_corrcoef|pearson|spearman|grad_norm)$")


def _number(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan  # metrics.jsonl keeps NaN and inf as strings.


def read_records(workdir: str) -> list[dict]:
  """The workdir's metrics.jsonl records ([] when there is none yet)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def final_metrics(records: list[dict]) -> dict:
  """The last value of every metric, and the last step."""
  out = {}
  for record in records:
    out.update({k: v for k, v in record.items() if k != "step"})
  if records:
    out["step"] = records[-1]["step"]
  return out


def results_rows(points: list[Point], statuses: dict[str, int]) -> tuple[list[str], list[dict]]:
  """(columns, rows): each point's values, status, last step and final metrics."""
  short = short_keys([p.values for p in points])
  rows, metric_keys = [], set()
  for point in points:
    final = final_metrics(read_records(point.workdir))
    if is_finished(point):
      status = "finished"
    elif statuses.get(point.name, 0) != 0:
      status = f"failed ({statuses[point.name]})"
    else:
      status = "unfinished"
    row = {**{column: format_value(point.values[k]) if k in point.values else "" for k, column in short.items()},
           "status": status, "step": final.pop("step", 0)}
    row.update({k: v for k, v in final.items() if k.startswith(("train/", "eval/", "perf/"))})
    metric_keys.update(k for k in final if k.startswith(("train/", "eval/", "perf/")))
    rows.append(row)
  order = lambda k: (not k.startswith("eval/"), not k.startswith("train/"), not k.endswith("/loss"), k)
  return [*short.values(), "status", "step", *sorted(metric_keys, key=order)], rows


def _replace(path: str, write) -> None:
  """Writes through `write(tmp_path)` then renames, so a reader (or another host) never sees half a file."""
  tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"
  write(tmp)
  os.replace(tmp, path)


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def write_results(root: str, points: list[Point], statuses: dict[str, int]) -> list[str]:
  """Writes results.csv, results.md and curves.png in `root`; their paths."""
  columns, rows = results_rows(points, statuses)
  csv_path, md_path = os.path.join(root, "results.csv"), os.path.join(root, "results.md")
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=columns, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  _replace(csv_path, lambda tmp: pathlib.Path(tmp).write_text(table.getvalue(), encoding="utf-8"))
  shown = [c for c in columns if not _CSV_ONLY.search(c)]
  lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
  lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in shown) + " |" for row in rows]
  _replace(md_path, lambda tmp: pathlib.Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8"))
  written = [csv_path, md_path]
  png = plot_curves(root, points)
  if png:
    written.append(png)
  return written


def plot_curves(root: str, points: list[Point]) -> str | None:
  """curves.png: per metric, each point's train curve (solid) and eval curve (dashed, dots)."""
  histories = {p.name: read_records(p.workdir) for p in points}
  names = sorted({k.split("/", 1)[1] for records in histories.values() for r in records for k in r
                  if k.startswith(("train/", "eval/")) and _PLOTTED.match(k.split("/", 1)[1])},
                 key=lambda n: (n != "loss", n == "grad_norm", n))
  if not names:
    return None
  import matplotlib
  matplotlib.use("Agg")  # Files only; no display on servers.
  import matplotlib.pyplot as plt
  columns = min(3, len(names))
  rows = math.ceil(len(names) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, name in zip(axes.flat, names):
    for i, point in enumerate(points):
      for split, style in (("train", dict(linestyle="-")), ("eval", dict(linestyle="--", marker="o"))):
        series = [(r["step"], _number(r[f"{split}/{name}"])) for r in histories[point.name] if f"{split}/{name}" in r]
        if series:
          steps, values = zip(*series)
          ax.plot(steps, values, color=colors[i % len(colors)], label=f"{point.name} ({split})", **style)
    ax.set_title(name)
    ax.set_xlabel("step")
    if name == "grad_norm":
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small", frameon=False)
  fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 4), 1, 1))
  path = os.path.join(root, "curves.png")
  _replace(path, lambda tmp: fig.savefig(tmp, dpi=90))
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- command line


def _primary_host() -> bool:
  """False on the other workers of a multi-host sweep (TPU VM slice, SLURM job), which all run it."""
  return all(os.environ.get(name, "0") == "0" for name in ("TPU_WORKER_ID", "SLURM_PROCID"))


def main(argv: list[str] | None = None) -> int:
  """The command line; returns the exit status (1 when a point failed)."""
  parser = argparse.ArgumentParser(prog="python -m flaxlm.sweep", description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="experiments/NAME.py[:ARGS], as for flaxlm.main")
  parser.add_argument("--workdir-root", required=True, help="one workdir per point goes under it")
  parser.add_argument("--parallel", type=int, default=1, help="points run at the same time (subprocesses)")
  parser.add_argument("--dry-run", action="store_true", help="print each point's command and run nothing")
  args, flags = parser.parse_known_args(argv)
  from flaxlm.config import ConfigError
  try:
    bad = [f for f in flags if not f.startswith("--config.")]
    if bad:
      raise ValueError(f"unknown argument(s) {bad}; only --config.KEY=VALUE overrides pass through to every point")
    if args.parallel < 1:
      raise ValueError(f"--parallel must be at least 1, got {args.parallel}")
    points = plan(args.config, args.workdir_root, flags)
    if args.dry_run:
      for point in points:
        print(("# finished: " if is_finished(point) else "") + shlex.join(point.command))
      return 0
    from flaxlm import config as config_lib
    for point in points:
      if not is_finished(point):  # Fail on a bad point before any run starts.
        config_lib.validate(point.config)
  except (ConfigError, ValueError, FileNotFoundError) as e:
    print(f"flaxlm.sweep: {e}", file=sys.stderr)
    return 2
  os.makedirs(args.workdir_root, exist_ok=True)
  statuses = run_sweep(points, args.parallel)
  if not _primary_host():
    return 1 if any(statuses.values()) else 0  # Every host ran the points; one writes the tables.
  written = write_results(args.workdir_root, points, statuses)
  print("flaxlm.sweep: wrote " + ", ".join(written))
  with open(written[1], encoding="utf-8") as f:
    print(f.read(), end="")
  return 1 if any(statuses.values()) else 0


if __name__ == "__main__":
  sys.exit(main())
