"""Objectives and tasks. Each task module supplies what the one training loop needs (see
`flaxlm.tasks.base.Task`): batches, a loss returning sums and counts, eval outputs and their
host-side scoring, and what to do after training; the loop never branches on the task.
"""

from flaxlm.tasks.causal_lm import CausalLmTask
from flaxlm.tasks.classification import ClassificationTask
from flaxlm.tasks.mlm import MlmTask
from flaxlm.tasks.ner import NerTask
from flaxlm.tasks.qa import QaTask
from flaxlm.tasks.seq2seq import Seq2SeqTask

TASKS = {"mlm": MlmTask, "classification": ClassificationTask, "ner": NerTask, "qa": QaTask,
         "causal_lm": CausalLmTask, "seq2seq": Seq2SeqTask}


def get_task(config, tokenizer):
  """The task object named by config.task.name."""
  return TASKS[config.task.name](config, tokenizer)
