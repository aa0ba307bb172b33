"""Import and export of Hugging Face BERT-family checkpoints; import of GPT-2, T5 and BART.

    python -m flaxlm.convert --from-hf DIR --to OUT          # Hugging Face -> flaxlm model directory
    python -m flaxlm.convert --from-flaxlm W --to-hf OUT     # flaxlm workdir/model -> Hugging Face (BERT, RoBERTa)

`mapping` holds the tensor-by-tensor correspondence (pure, no files), `hf_files` the Hugging Face
config, weight and tokenizer files, `model_dirs` the whole-directory conversions.
"""

from flaxlm.convert.mapping import ARCHITECTURES, ConversionError, all_rules, flaxlm_to_hf, hf_to_flaxlm
from flaxlm.convert.model_dirs import export_to_hf, import_from_hf, read_flaxlm_params
