"""Fine-tune for CoNLL-2003 English NER: IOB2 tags, span-level F1 with conlleval semantics.

BERT-base reaches about 92.4 test F1 (95 dev) fine-tuned; a BiLSTM-CRF trained from scratch about
90 (Devlin et al. 2019, Lample et al. 2016). The tag is predicted at each word's first word piece;
sentences are packed several to a row. Files: `word###TAG` tokens a line, or the classic
column format (word first, tag last, blank lines between sentences).

  python -m flaxlm.main --config experiments/conll03_ner.py:data_dir=../shared/data/conll2003 \\
      --config.init_from=runs/minilm --workdir runs/conll03
  python -m flaxlm.predict --workdir runs/conll03 --text "George Washington went to Washington ."
  python -m flaxlm.main --config experiments/conll03_ner.py:smoke --workdir /tmp/conll_smoke  # tiny model, ~1 min

`data_dir` holds train.txt and valid.txt.
"""

import os

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """CoNLL-2003 NER; args: data_dir=DIR (train.txt, valid.txt), smoke."""
  args = config_lib.parse_config_args(arg)
  c = recipes.finetuning("ner", args, set(), "experiments/conll03_ner.py")
  data_dir = recipes.data_dir(args, "conll2003")
  if data_dir:
    c.data.train_file = os.path.join(data_dir, "train.txt")
    c.data.eval_file = os.path.join(data_dir, "valid.txt")
  if "smoke" not in args:
    c.optimizer.update(learning_rate=1e-4, warmup_steps=300)
    c.train.update(batch_size=4, num_steps=3000, eval_every=1000, checkpoint_every=1000)
  return c
