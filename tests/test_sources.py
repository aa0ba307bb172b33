"""Document sources: local files through the TFDS builder, the embedded corpus, and bad inputs."""

import os

import pytest
import tensorflow_datasets as tfds

from flaxlm import config as config_lib
from flaxlm.data import sources


def _data_config(files, eval_fraction=0.2):
  c = config_lib.base_config()
  c.data.source = "text_files"
  c.data.files = tuple(files)
  c.data.eval_fraction = eval_fraction
  return c.data


def _docs(source):
  return [source[i] for i in range(len(source))]


def test_local_files_split_into_disjoint_train_and_validation(tmp_path):
  path = tmp_path / "a.txt"
  docs = [f"Document {i} first line.\nDocument {i} second line." for i in range(200)]
  path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
  train = _docs(sources.text_source(_data_config([str(path)]), "train"))
  valid = _docs(sources.text_source(_data_config([str(path)]), "validation"))
  assert sorted(train + valid) == sorted(docs)
  assert not set(train) & set(valid)
  assert 20 <= len(valid) <= 60  # 20% of 200 by content hash.
  assert all(sources.is_eval_document(d, 0.2) for d in valid)


def test_documents_are_blank_line_blocks_and_long_blocks_are_split(tmp_path):
  path = tmp_path / "b.txt"
  long_block = "\n".join(f"line {i}" for i in range(sources.MAX_LINES_PER_RECORD + 10))
  path.write_text("  first doc  \n\n\n\nsecond\ndoc\n\n" + long_block + "\n", encoding="utf-8")
  docs = list(sources.read_documents(str(path)))
  assert docs[:2] == ["first doc", "second\ndoc"]
  assert len(docs) == 4 and docs[3].count("\n") == 9


def test_changed_file_gets_a_new_dataset(tmp_path):
  path = tmp_path / "c.txt"
  path.write_text("alpha one.\n\nbeta two.\n", encoding="utf-8")
  first = sources.text_source(_data_config([str(path)], 0.5), "train").identity
  path.write_text("alpha one.\n\nbeta two.\n\ngamma three.\n", encoding="utf-8")
  os.utime(path, (1e9, 1e9))
  second = sources.text_source(_data_config([str(path)], 0.5), "train").identity
  assert first != second


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing_corpus.txt"):
    sources.text_source(_data_config([str(tmp_path / "missing_corpus.txt")]), "train")


def test_empty_corpus_is_an_error(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("\n\n\n", encoding="utf-8")
  with pytest.raises(ValueError, match="no documents"):
    sources.text_source(_data_config([str(path)]), "train")


def test_non_utf8_file_is_named(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
  with pytest.raises(Exception, match="latin1.txt"):
    sources.text_source(_data_config([str(path)]), "train")


def test_embedded_python_docs_corpus_is_real_prose():
  path = sources.python_docs_corpus()
  with open(path, encoding="utf-8") as f:
    text = f.read()
  docs = [d for d in text.split("\n\n") if d.strip()]
  assert len(docs) > 3000 and len(text) > 1_000_000
  assert "Return" in text and "def " in text  # Docstrings and the language reference topics.


def test_too_few_documents_for_a_validation_split_is_explained(tmp_path):
  path = tmp_path / "tiny.txt"
  path.write_text("only one document here.\n", encoding="utf-8")
  with pytest.raises(ValueError, match="too few to hold out data.eval_fraction"):
    sources.text_source(_data_config([str(path)], 0.2), "train")


class FlaxlmTestTexts(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset by name, standing in for wikipedia/c4: documents in a `body` feature."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"body": tfds.features.Text(), "title": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(40), "validation": self._generate_examples(5)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"body": f"Article {i} begins here.\nIt has a second sentence, number {i}.", "title": f"t{i}"}


def test_any_tfds_dataset_by_name_with_split_slicing(tmp_path):
  FlaxlmTestTexts(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  c = config_lib.base_config()
  c.data.update(source="tfds", tfds_name="flaxlm_test_texts", text_key="body", tfds_data_dir=str(tmp_path),
                train_split="train[:50%]", eval_split="validation")
  train = sources.text_source(c.data, c.data.train_split)
  valid = sources.text_source(c.data, c.data.eval_split)
  assert len(train) == 20 and len(valid) == 5
  assert all(d.startswith("Article ") and "\n" in d for d in _docs(train) + _docs(valid))
