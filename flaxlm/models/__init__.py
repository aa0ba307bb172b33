"""Pure Flax (linen) modules: layers, the BERT encoder, and task heads."""

from flaxlm.models.encoder import BertEncoder
from flaxlm.models.heads import (BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification, MlmTransform, Pooler, gather_positions)
from flaxlm.models.layers import ModelConfig, attention_mask, dot_product_attention
