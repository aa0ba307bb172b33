"""Where documents come from: the embedded Python-docs corpus, local text files, or any TFDS dataset.

Local files become a TFDS dataset through `LocalTextFiles`, a builder prepared once (array_record
format, no TensorFlow needed) in the TFDS data dir; every source then reads the same way, as a
random-access TFDS data source of documents that grain pipelines index into.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import os
import re
import sys
import sysconfig
import zlib
from collections.abc import Iterator

import tensorflow_datasets as tfds

# A record holds at most this many lines; longer documents (a novel with no blank lines) are split
# so that a single record stays small and tokenizes quickly.
MAX_LINES_PER_RECORD = 256


def cache_dir() -> str:
  """Where flaxlm caches its embedded corpus and trained vocabularies ($FLAXLM_CACHE_DIR)."""
  return os.environ.get("FLAXLM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "flaxlm")


def tfds_data_dir(configured: str) -> str:
  """The configured TFDS data dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return configured or os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                                      "tensorflow_datasets")


# ----------------------------------------------------------------------------- embedded corpus

_SKIPPED_STDLIB_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
                        "turtledemo", "__pycache__"}


def _paragraph_lines(text: str) -> list[str]:
  """Wrapped prose -> one line per paragraph (blank-line separated), whitespace collapsed."""
  paragraphs = re.split(r"\n\s*\n", text.strip())
  return [" ".join(p.split()) for p in paragraphs if p.strip()]


def _python_docs() -> Iterator[list[str]]:
  """Documents (lists of paragraph lines) from pydoc's topics and the stdlib's docstrings.

  Docstrings are read with `ast`, never by importing modules (some stdlib modules act on import).
  """
  from pydoc_data.topics import topics
  for name in sorted(topics):
    lines = _paragraph_lines(topics[name])
    if lines:
      yield lines
  stdlib = sysconfig.get_paths()["stdlib"]
  for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
    parts = os.path.relpath(path, stdlib).split(os.sep)
    if _SKIPPED_STDLIB_DIRS.intersection(parts):
      continue
    try:
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue  # A few stdlib files are deliberately invalid or not UTF-8 (test fixtures).
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc and len(doc) >= 40:
          yield _paragraph_lines(doc)


def python_docs_corpus() -> str:
  """Path of the embedded corpus as a text file (documents separated by blank lines), built once."""
  version = ".".join(map(str, sys.version_info[:3]))
  path = os.path.join(cache_dir(), "corpus", f"python-docs-{version}.txt")
  if not os.path.isfile(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      for lines in _python_docs():
        f.write("\n".join(lines) + "\n\n")
    os.replace(tmp, path)  # Atomic: a crash never leaves a half-written corpus behind.
  return path


# ----------------------------------------------------------------------------- local text files


def expand_files(patterns) -> list[str]:
  """Files matched by each pattern, in order; a pattern that matches nothing is an error naming it."""
  files = []
  for pattern in patterns:
    matched = sorted(glob.glob(os.path.expanduser(pattern)))
    if not matched:
      raise FileNotFoundError(f"data file not found: {pattern}")
    files.extend(m for m in matched if os.path.isfile(m))
  return files


def read_documents(path: str) -> Iterator[str]:
  """Documents of a text file: blocks separated by blank lines, each at most MAX_LINES_PER_RECORD lines."""
  lines: list[str] = []
  with open(path, encoding="utf-8") as f:
    try:
      for line in f:
        line = line.strip()
        if line:
          lines.append(line)
          if len(lines) == MAX_LINES_PER_RECORD:
            yield "\n".join(lines)
            lines = []
        elif lines:
          yield "\n".join(lines)
          lines = []
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}: not UTF-8 text ({e})") from e
  if lines:
    yield "\n".join(lines)


def is_eval_document(text: str, eval_fraction: float) -> bool:
  """Deterministic hold-out by content hash: stable across runs, machines and file order."""
  return zlib.crc32(text.encode("utf-8")) % 100_000 < eval_fraction * 100_000


class LocalTextFilesConfig(tfds.core.BuilderConfig):
  """Which files and which hold-out fraction; the config name is a hash of both plus file stamps."""

  def __init__(self, files: list[str], eval_fraction: float):
    stamp = "|".join(f"{os.path.abspath(p)}:{os.path.getsize(p)}:{os.path.getmtime(p)}" for p in files)
    digest = hashlib.sha256(f"{stamp}|{eval_fraction}|{MAX_LINES_PER_RECORD}".encode()).hexdigest()[:16]
    super().__init__(name=f"files_{digest}", description=f"{len(files)} local text file(s)")
    self.files = files
    self.eval_fraction = eval_fraction


class LocalTextFiles(tfds.core.GeneratorBasedBuilder):
  """TFDS dataset of documents from local text files, split into train and validation."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(False), "validation": self._generate_examples(True)}

  def _generate_examples(self, eval_split: bool):
    config: LocalTextFilesConfig = self.builder_config
    for file_index, path in enumerate(config.files):
      for doc_index, text in enumerate(read_documents(path)):
        if is_eval_document(text, config.eval_fraction) == eval_split:
          yield f"{file_index}:{doc_index}", {"text": text}


def local_text_builder(files: list[str], eval_fraction: float, data_dir: str) -> LocalTextFiles:
  """The prepared TFDS builder for these files (prepared now if it is not yet)."""
  builder = LocalTextFiles(config=LocalTextFilesConfig(files, eval_fraction), data_dir=data_dir)
  if not builder.is_prepared():
    counts = [0, 0]
    for path in files:
      for text in read_documents(path):
        counts[is_eval_document(text, eval_fraction)] += 1
    if not sum(counts):
      raise ValueError(f"no documents in {files}: the corpus is empty")
    if not all(counts):
      raise ValueError(f"{files} hold {sum(counts)} document(s): too few to hold out data.eval_fraction="
                       f"{eval_fraction} for validation and keep some for training (train {counts[0]}, "
                       f"validation {counts[1]})")
    print(f"flaxlm: preparing TFDS dataset {builder.info.full_name} from {len(files)} file(s) in {data_dir} "
          "(once)", file=sys.stderr, flush=True)
    tfds.disable_progress_bar()  # Its nested bars garble the console; the message above says enough.
    builder.download_and_prepare(file_format="array_record")
  return builder


class TextSource:
  """Random-access documents (str) of one split: len() and [i], as grain's MapDataset.source wants."""

  def __init__(self, tfds_source, text_key: str, name: str, identity: str):
    self._source = tfds_source
    self._text_key = text_key
    self.name = name
    self.identity = identity  # Changes whenever the documents may have changed (cache key).

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str:
    text = self._source[index][self._text_key]
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)

  def __repr__(self) -> str:
    return f"TextSource({self.name}, {len(self)} documents)"


def text_source(data_config, split: str) -> TextSource:
  """Documents of `split` ('train'/'validation' names from the config) for the configured source."""
  data_dir = tfds_data_dir(data_config.tfds_data_dir)
  if data_config.source == "tfds":
    name = data_config.tfds_name
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    return TextSource(source, data_config.text_key, f"{name}[{split}]", f"tfds:{name}:{split}")
  if data_config.source == "python_docs":
    files = [python_docs_corpus()]
  else:
    files = expand_files(data_config.files)
  builder = local_text_builder(files, data_config.eval_fraction, data_dir)
  local_split = {data_config.train_split: "train", data_config.eval_split: "validation"}.get(split, split)
  if local_split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {sorted(builder.info.splits)} (local files have train, validation)")
  source = builder.as_data_source(split=local_split)
  name = f"{os.path.basename(files[0])}{'+' if len(files) > 1 else ''}[{local_split}]"
  return TextSource(source, "text", name, f"{builder.builder_config.name}:{local_split}")


# ----------------------------------------------------------------------------- parallel text


def read_parallel(prefix: str, source_lang: str, target_lang: str) -> list[tuple[str, str]]:
  """Sentence pairs from line-aligned files PREFIX.SRC and PREFIX.TGT (Multi30k's and WMT's layout).

  Pairs with an empty side are skipped; files of different lengths are an error that names both.
  """
  paths = [f"{prefix}.{lang}" for lang in (source_lang, target_lang)]
  sides = []
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"parallel text file not found: {path} (data file prefix {prefix!r} + "
                              f"'.{source_lang}' / '.{target_lang}')")
    try:
      with open(path, encoding="utf-8") as f:
        sides.append([line.rstrip("\n").strip() for line in f])
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}: not UTF-8 text ({e})") from e
  if len(sides[0]) != len(sides[1]):
    raise ValueError(f"{paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}: "
                     "parallel files must be line-aligned")
  pairs = [(s, t) for s, t in zip(*sides) if s and t]
  if not pairs:
    raise ValueError(f"{paths[0]} / {paths[1]} hold no sentence pairs")
  return pairs
