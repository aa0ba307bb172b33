"""Fine-tuning data: GLUE TSV, CoNLL and SQuAD readers, windows and n-best decoding, hand-made files."""

import json

import numpy as np
import pytest

from flaxlm.data import conll, glue, squad
from flaxlm.tasks.classification import encode_texts, truncate_pair


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_glue_tsv_with_header_named_columns_and_regression(tmp_path):
  sst2 = _write(tmp_path, "sst2.tsv", "sentence\tlabel\na fine film \t1\n\"quoted\" dull\t0\n")
  assert glue.read_tsv(sst2, glue.GLUE_TASKS["sst2"]) == [
      glue.TextExample(("a fine film",), 1.0), glue.TextExample(('"quoted" dull',), 0.0)]
  mnli = _write(tmp_path, "mnli.tsv", "index\tgenre\tsentence1\tsentence2\tgold_label\n"
                "0\tfic\tA man sleeps.\tA person rests.\tentailment\n1\tfic\tIt rains.\tIt is dry.\tcontradiction\n")
  assert [(e.texts, e.label) for e in glue.read_tsv(mnli, glue.GLUE_TASKS["mnli"])] == [
      (("A man sleeps.", "A person rests."), 0.0), (("It rains.", "It is dry."), 2.0)]
  stsb = _write(tmp_path, "stsb.tsv", "genre\tsentence1\tsentence2\tscore\nx\ta\tb\t3.8\n")
  assert glue.read_tsv(stsb, glue.GLUE_TASKS["stsb"])[0].label == pytest.approx(3.8)


def test_glue_cola_has_no_header(tmp_path):
  cola = _write(tmp_path, "cola.tsv", "gj04\t1\t\tThe book was read.\ngj04\t0\t*\tBook the read was.\n")
  assert glue.read_tsv(cola, glue.GLUE_TASKS["cola"]) == [
      glue.TextExample(("The book was read.",), 1.0), glue.TextExample(("Book the read was.",), 0.0)]


@pytest.mark.parametrize("content,message", [
    ("sentence\tlabel\ngood\t1\nno label here\n", r"bad.tsv:3: expected at least 2 tab-separated fields"),
    ("sentence\tlabel\ngood\t7\n", r"bad.tsv:2: label '7' is not one of \['0', '1'\]"),
    ("text\tlabel\ngood\t1\n", r"bad.tsv:1: header lacks column\(s\) \['sentence'\]"),
])
def test_glue_bad_lines_name_file_and_line(tmp_path, content, message):
  with pytest.raises(ValueError, match=message):
    glue.read_tsv(_write(tmp_path, "bad.tsv", content), glue.GLUE_TASKS["sst2"])


def test_longest_first_truncation():
  assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7])
  assert truncate_pair([1, 2], [3, 4, 5], 3) == ([1], [3, 4])


def test_conll_both_formats_read_the_same(tmp_path):
  inline = _write(tmp_path, "a.txt", "EU###B-ORG rejects###O German###B-MISC call###O\nPeter###B-PER Blackburn###I-PER\n")
  columns = _write(tmp_path, "b.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
                   "German JJ B-NP B-MISC\ncall NN I-NP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
  assert conll.read_conll(inline) == conll.read_conll(columns) == [
      conll.TaggedSentence(("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O")),
      conll.TaggedSentence(("Peter", "Blackburn"), ("B-PER", "I-PER"))]
  assert conll.label_set(conll.read_conll(inline)) == ("O", "B-MISC", "B-ORG", "B-PER", "I-PER")


def test_conll_errors_name_file_and_line(tmp_path):
  with pytest.raises(ValueError, match=r"c.txt:2: tag 'PER' is not IOB2"):
    conll.read_conll(_write(tmp_path, "c.txt", "a###O\nb###PER\n"))
  with pytest.raises(ValueError, match=r"d.txt:1: token 'word' is not word###TAG"):
    conll.read_conll(_write(tmp_path, "d.txt", "a###O word\n"))


def _squad_file(tmp_path, version2=False):
  context = "Python was created by Guido van Rossum. It was first released in 1991 as Python 0.9.0."
  qas = [{"id": "q1", "question": "Who created Python?",
          "answers": [{"text": "Guido van Rossum", "answer_start": context.index("Guido")}]},
         {"id": "q2", "question": "When was Python first released?",
          "answers": [{"text": "1991", "answer_start": context.index("1991")}]}]
  if version2:
    qas.append({"id": "q3", "question": "Who bought Python?", "answers": [], "is_impossible": True})
  data = {"version": "2.0" if version2 else "1.1",
          "data": [{"title": "python", "paragraphs": [{"context": context, "qas": qas}]}]}
  return _write(tmp_path, "squad.json", json.dumps(data))


def test_squad_windows_cover_the_context_and_mark_the_answer(tmp_path, tiny_tokenizer):
  examples = squad.read_squad(_squad_file(tmp_path))
  assert [e.qid for e in examples] == ["q1", "q2"]
  features = squad.make_features(examples, tiny_tokenizer, max_seq_len=24, doc_stride=5, max_query_length=8)
  for index, example in enumerate(examples):
    windows = [f for f in features if f.example_index == index]
    assert len(windows) > 1  # The context does not fit one 24-token row.
    # Every context token is in some window and is the best window's token exactly once.
    spans = [span for f in windows for t, span in f.context_offsets.items() if f.max_context[t]]
    context_tokens = tiny_tokenizer.encode_with_offsets(example.context)[1]
    assert sorted(spans) == sorted(context_tokens)
    marked = [f for f in windows if f.start_position > 0]
    assert marked
    for f in marked:
      start, end = f.context_offsets[f.start_position][0], f.context_offsets[f.end_position][1]
      assert example.context[start:end] == example.answers[0][0]
    for f in windows:
      assert len(f.input_ids) <= 24 and f.input_ids[0] == tiny_tokenizer.cls_id


def _feature(example_index, offsets, max_context=None, first=4):
  """A window whose context tokens sit at feature positions first, first+1, ... (before: [CLS] q q [SEP])."""
  tokens = {first + i: span for i, span in enumerate(offsets)}
  return squad.QaFeature(example_index, np.zeros(first + len(offsets) + 1, np.int32), None, 0, 0, tokens,
                         max_context or {t: True for t in tokens})


def test_nbest_decoding_hand_worked():
  context = "Guido van Rossum created Python in 1991"
  words = [(0, 5), (6, 9), (10, 16), (17, 24), (25, 31), (32, 34), (35, 39)]  # Feature positions 4..10.
  examples = [squad.QaExample("q1", "Who?", context, (("Guido van Rossum", 0),)),
              squad.QaExample("q2", "When?", context, (("1991", 35),)),
              squad.QaExample("q3", "Who bought it?", context, ())]
  # q2 has two windows; position 10 (1991) is best in the second, so the first's span there is ignored.
  features = [_feature(0, words), _feature(1, words, {t: t < 10 for t in range(4, 11)}), _feature(1, words),
              _feature(2, words)]
  L = 11
  start, end = np.full((4, L), -10.0), np.full((4, L), -10.0)
  # q1: gold (4, 6) scores 10. A question token (3) never starts an answer; (4, 8) scores 11
  # is longer than max_answer_length 3; (9, 5) would score 24 but ends before it starts.
  start[0, [4, 3, 9]] = [5.0, 8.0, 20.0]
  end[0, [6, 8, 5, 9]] = [5.0, 6.0, 4.0, -11.0]
  end[0, 2] = 7.0
  # q2: window 1 puts 30 on (10, 10), but there 1991 is not in its best window; window 2 gives it 4.
  start[1, 10], end[1, 10] = 15.0, 15.0
  start[2, 10], end[2, 10] = 2.0, 2.0
  # q3: null ([CLS], [CLS]) scores 6; the best span scores 2; 6 - 2 > threshold 1 -> no answer.
  start[3, 0], end[3, 0] = 3.0, 3.0
  start[3, 4], end[3, 4] = 1.0, 1.0
  kwargs = dict(n_best=5, max_answer_length=3, null_threshold=1.0)
  assert squad.decode_answers(examples, features, start, end, version_2=True, **kwargs) == {
      "q1": "Guido van Rossum", "q2": "1991", "q3": ""}
  assert squad.decode_answers(examples, features, start, end, version_2=False, **kwargs)["q3"] == "Guido"
  # With a threshold above the margin, v2 answers the span.
  assert squad.decode_answers(examples, features, start, end, version_2=True, n_best=5, max_answer_length=3,
                              null_threshold=5.0)["q3"] == "Guido"


def test_squad_bad_answer_offset_is_named(tmp_path):
  data = {"data": [{"paragraphs": [{"context": "abc def", "qas": [
      {"id": "x1", "question": "q?", "answers": [{"text": "def", "answer_start": 0}]}]}]}]}
  with pytest.raises(ValueError, match="question x1: answer 'def' is not at character 0"):
    squad.read_squad(_write(tmp_path, "bad.json", json.dumps(data)))


def test_pair_encoding(tiny_tokenizer):
  ids, types = encode_texts(tiny_tokenizer, ("the function", "returns a value"), 64)
  n_a = len(tiny_tokenizer.encode("the function"))
  assert ids[0] == tiny_tokenizer.cls_id and ids[n_a + 1] == tiny_tokenizer.sep_id and ids[-1] == tiny_tokenizer.sep_id
  np.testing.assert_array_equal(types, [0] * (n_a + 2) + [1] * (len(ids) - n_a - 2))
