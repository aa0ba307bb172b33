"""Objectives and tasks. Each task module supplies what the one training loop needs:

- `dummy_batch(batch_size)`: a batch of the right shapes, for initialisation;
- `train_batches(batch_size, process_index, process_count)`: a checkpointable grain iterator
  (`get_state`/`set_state`) of this process's numpy batches;
- `eval_batches(...)`: one pass over the eval split, the last batch padded with segment 0 rows;
- `init_params(rng, batch)` and `loss(params, batch, rng, train)`, which returns
  (summed loss, its weight, {metric: (sum, count)}) so accumulation and eval sum exactly;
- `train_flops_per_row()`, for perf/mfu; `best_metric`; `after_training(params, log)`.
"""

from flaxlm.tasks.mlm import MlmTask

TASKS = {"mlm": MlmTask}


def get_task(config, tokenizer):
  """The task object named by config.task.name."""
  return TASKS[config.task.name](config, tokenizer)
