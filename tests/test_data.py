"""The data layer on the real IndoNLU files and on tiny, deliberately broken copies of them."""
from __future__ import annotations

import ast
import csv

import pytest

from kdlib import data
from kdlib.errors import ConfigError, DataError

EXPECTED_SIZES = {  # train/valid/test, as IndoNLU publishes them
    "emot": (3521, 440, 440), "smsa": (11000, 1260, 500), "casa": (810, 90, 180), "hoasa": (2283, 285, 286),
    "wrete": (300, 50, 100), "posp": (6720, 840, 840), "bapos": (8000, 1000, 1029), "terma": (3000, 1000, 1000),
    "keps": (800, 200, 247), "nergrit": (1672, 209, 209), "nerp": (6720, 840, 840), "facqa": (2495, 311, 311),
}
COLUMNS = {"single": ["text", "label"], "pair": ["text_a", "text_b", "label"], "aspect": ["text", "labels"],
           "tagging": ["tokens", "tags"], "qa": ["question", "tokens", "tags"]}


def test_registry_covers_the_twelve_datasets():
    assert set(data.DATASETS) == set(EXPECTED_SIZES)
    assert {s.shape for s in data.DATASETS.values()} == set(data.SHAPES)


def _first_raw_example(spec, data_dir) -> dict:
    """The first train example read straight from IndoNLU's file with the csv module, labels as names: what the
    loader must give."""
    path = spec.path(data_dir, "train")
    if spec.ext == "txt":  # token<TAB>tag lines up to the first blank line
        lines = path.read_text(encoding="utf-8").split("\n\n")[0].splitlines()
        tokens, tags = zip(*(line.split("\t") for line in lines), strict=True)
        return {"tokens": list(tokens), "tags": list(tags)}
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t" if spec.ext == "tsv" else ",")
        header = next(rows) if spec.header else ["text", "label"]  # SmSA: headerless text<TAB>label
        row = dict(zip(header, next(rows), strict=True))
    if spec.shape == "qa":  # cells are Python list literals
        return {"question": ast.literal_eval(row["question"]), "tokens": ast.literal_eval(row["passage"]),
                "tags": ast.literal_eval(row["seq_label"])}
    if spec.shape == "aspect":
        return {"text": row[spec.header[0]], "labels": [row[a] for a in spec.aspects]}
    if spec.shape == "pair":
        return {"text_a": row["sent_A"], "text_b": row["sent_B"], "label": row["label"]}
    return {"text": row.get("tweet", row.get("text")), "label": row["label"]}


def _label_names(example: dict, spec) -> dict:
    named = {k: v for k, v in example.items() if k not in ("label", "labels", "tags")}
    for key in ("labels", "tags"):
        if key in example:
            named[key] = [spec.labels[i] for i in example[key]]
    if "label" in example:
        named["label"] = spec.labels[example["label"]]
    return named


@pytest.mark.parametrize("key", sorted(EXPECTED_SIZES))
def test_full_dataset_sizes_and_columns(key, data_dir):
    dd = data.load_indonlu(key, data_dir)
    spec = data.get_spec(key)
    assert tuple(dd[s].num_rows for s in data.SPLITS) == EXPECTED_SIZES[key]
    assert dd["train"].column_names == COLUMNS[spec.shape]
    assert _label_names(dd["train"][0], spec) == _first_raw_example(spec, data_dir)


def test_known_first_examples(data_dir):
    smsa = data.load_split("smsa", "train", data_dir, limit=2)
    assert smsa[1]["text"].startswith("mohon ulama lurus")
    assert smsa.features["label"].int2str(smsa[1]["label"]) == "neutral"
    casa = data.load_split("casa", "train", data_dir, limit=2)
    names = casa.features["labels"].feature.names
    # "Avanza kenapa jadi boros bensin ...": fuel negative, every other aspect neutral
    assert [names[i] for i in casa[1]["labels"]] == ["negative"] + ["neutral"] * 5
    facqa = data.load_split("facqa", "train", data_dir, limit=1)
    assert facqa[0]["question"][:2] == ["Kelompok", "apakah"]
    assert facqa[0]["tags"][10:12] == [1, 2]  # "Hezb-ul Mujahedeen" is the B I answer
    keps = data.load_split("keps", "train", data_dir, limit=1)
    assert keps[0]["tokens"][:3] == ["Setelah", "melalui", "proses"]


def test_unknown_dataset_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown dataset 'smas'.*'smsa'"):
        data.get_spec("smas")
    assert data.get_spec("NERGrit").key == "nergrit"


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist.*kdexam data download"):
        data.resolve_data_dir(tmp_path / "nowhere")


def test_data_dir_from_environment(monkeypatch, tiny_data_dir):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tiny_data_dir))
    assert data.resolve_data_dir() == tiny_data_dir.resolve()


def _edit_line(path, line_no, new):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_no - 1] = new
    path.write_text("\n".join(lines), encoding="utf-8")


def _replace_line(line_no, new):
    return lambda path: _edit_line(path, line_no, new)


def _bad_bytes_at(offset):
    return lambda path: path.write_bytes(path.read_bytes()[:offset] + b"\xff\xfe" + path.read_bytes()[offset:])


@pytest.mark.parametrize("key, split, corrupt, match", [
    pytest.param("emot", "valid", lambda path: path.unlink(),
                 r"valid_preprocess\.csv: file not found.*kdexam data download", id="missing-file"),
    pytest.param("nergrit", "train", _replace_line(3, "industri O"),
                 r"train_preprocess\.txt:3: malformed line 'industri O'", id="conll-line-without-tab"),
    pytest.param("nerp", "valid", _replace_line(2, "dinas\tB-ANIMAL"),
                 r"valid_preprocess\.txt:2: tag 'B-ANIMAL' is not in the label set of nerp", id="unknown-tag"),
    pytest.param("smsa", "test", _replace_line(4, "bagus sekali\tpositve"),
                 r"test_preprocess\.tsv:4: label 'positve' is not in the label set", id="unknown-class-label"),
    pytest.param("hoasa", "train", _replace_line(2, "kamar kotor,neut,neut,neut,neut,bad,neut,neut,neut,neut,neut"),
                 r":2: kebersihan label 'bad' is not in the label set of hoasa", id="unknown-aspect-label"),
    pytest.param("wrete", "train", _replace_line(3, "only,three,fields"),
                 r"train_preprocess\.csv:3: malformed line: 3 fields where wrete has 4", id="wrong-field-count"),
    pytest.param("emot", "train", _replace_line(1, "tweet,label"),
                 r":1: wrong header 'tweet,label'; expected 'label,tweet'", id="wrong-header"),
    pytest.param("keps", "test", lambda path: path.write_text("\n\n", encoding="utf-8"),
                 "the test split of keps is empty", id="empty-split"),
    pytest.param("facqa", "train", _replace_line(2, '"__import__(\'os\').getcwd()","[\'a\']","[\'O\']"'),
                 r":2: column 'question' is not a list of strings", id="facqa-cells-are-literals-never-code"),
    pytest.param("facqa", "valid", _replace_line(2, '"[\'Siapa\', \'?\']","[\'Budi\', \'datang\']","[\'B\']"'),
                 r":2: passage has 2 tokens but seq_label has 1 tags", id="facqa-passage-and-tags-must-align"),
    pytest.param("terma", "train", _bad_bytes_at(50), "not valid UTF-8", id="invalid-utf8"),
])
def test_a_broken_file_is_named_in_a_data_error(key, split, corrupt, match, tiny_data_dir):
    corrupt(data.get_spec(key).path(tiny_data_dir, split))
    with pytest.raises(DataError, match=match):
        data.load_indonlu(key, tiny_data_dir)


def test_missing_final_blank_line_keeps_last_sentence(tiny_data_dir):
    path = data.get_spec("posp").path(tiny_data_dir, "test")
    n = data.load_split("posp", "test", tiny_data_dir).num_rows
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\n", encoding="utf-8")
    assert data.load_split("posp", "test", tiny_data_dir).num_rows == n


def test_cap_is_seeded_subset(tiny_data_dir):
    ds = data.load_split("smsa", "train", tiny_data_dir)
    a, b = data.cap(ds, 10, seed=1), data.cap(ds, 10, seed=1)
    assert a["text"] == b["text"] and len(a) == 10
    assert data.cap(ds, 10, seed=2)["text"] != a["text"]
    assert data.cap(ds, None) is ds


def test_word_tokenize_and_example_words():
    assert data.word_tokenize("Harga-nya murah, tapi AC-nya mati!") == \
        ["Harga-nya", "murah", ",", "tapi", "AC-nya", "mati", "!"]
    spec = data.get_spec("wrete")
    assert data.example_words({"text_a": "a b", "text_b": "c"}, spec) == ["a", "b", data.SEP, "c"]


def test_vocab_frequency_min_freq_max_size_and_roundtrip(tmp_path):
    texts = [["Makan", "nasi"], ["makan", "sate"], ["makan", "nasi", "goreng"]]
    vocab = data.Vocab.build(texts, min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "<sep>", "makan", "nasi"]  # sate/goreng seen once
    assert vocab.encode(["MAKAN", "sate", "<sep>"]) == [3, 1, 2]
    assert data.Vocab.build(texts, max_size=4).itos[3:] == ["makan"]
    cased = data.Vocab.build(texts, lower=False)
    assert "Makan" in cased and cased.encode(["makan"]) != cased.encode(["Makan"])
    vocab.save(tmp_path / "v.json")
    assert data.Vocab.load(tmp_path / "v.json").itos == vocab.itos
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a kd-exam vocabulary"):
        data.Vocab.load(tmp_path / "bad.json")


def test_align_labels_first_subword_only():
    # words: "Jakarta"(2 pieces) "kota"(1) "besar"(3 pieces); CLS/SEP are None
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    assert data.align_labels(word_ids, [5, 7, 9]) == [-100, 5, -100, 7, 9, -100, -100, -100]
    assert data.first_subword_index(word_ids, 3) == [1, 3, 4]
    assert data.first_subword_index(word_ids, 4) == [1, 3, 4, -1]  # word 3 was truncated away


def test_align_labels_only_on_labelled_sequence():
    # question word 0, then passage words 0 and 1: same word id in different sequences must not collide
    word_ids = [None, 0, None, 0, 0, 1, None]
    seq_ids = [None, 0, None, 1, 1, 1, None]
    assert data.align_labels(word_ids, [1, 2], seq_ids, labelled_sequence=1) == [-100, -100, -100, 1, -100, 2, -100]


@pytest.fixture(scope="module")
def wordpiece(_tiny_master):
    dd = data.load_indonlu("nergrit", _tiny_master)
    return data.train_wordpiece(data.texts_for_tokenizer(dd, data.get_spec("nergrit")), vocab_size=300)


def test_encode_for_bert_tagging(wordpiece, tiny_data_dir):
    spec = data.get_spec("nergrit")
    ds = data.load_split("nergrit", "train", tiny_data_dir, limit=4)
    enc = ds.map(data.encode_for_bert, batched=True, fn_kwargs={"tokenizer": wordpiece, "spec": spec,
                                                                 "max_length": 512})
    for ex in enc:
        labelled = [label for label in ex["subword_labels"] if label != -100]
        assert labelled == ex["tags"] == ex["labels"]  # every word labelled exactly once, in order
        assert [ex["subword_labels"][i] for i in ex["word_index"]] == ex["tags"]
        assert ex["input_ids"][0] == wordpiece.cls_token_id


def test_encode_for_bert_qa_labels_passage_only(wordpiece, tiny_data_dir):
    spec = data.get_spec("facqa")
    ds = data.load_split("facqa", "train", tiny_data_dir, limit=3)
    enc = ds.map(data.encode_for_bert, batched=True, fn_kwargs={"tokenizer": wordpiece, "spec": spec,
                                                                 "max_length": 512})
    for ex in enc:
        sep = ex["input_ids"].index(wordpiece.sep_token_id)
        assert all(label == -100 for label in ex["subword_labels"][:sep])  # nothing in the question is labelled
        assert [label for label in ex["subword_labels"] if label != -100] == ex["tags"]
        assert min(ex["word_index"]) > sep


def test_encode_for_bert_truncation_marks_lost_words(wordpiece, tiny_data_dir):
    spec = data.get_spec("nergrit")
    ds = data.load_split("nergrit", "train", tiny_data_dir, limit=4)
    enc = ds.map(data.encode_for_bert, batched=True, fn_kwargs={"tokenizer": wordpiece, "spec": spec,
                                                                 "max_length": 8})
    assert all(len(ex["input_ids"]) <= 8 for ex in enc)
    assert any(-1 in ex["word_index"] for ex in enc)
    for ex in enc:  # a word the model cannot see is not trained on
        assert [label for label, i in zip(ex["labels"], ex["word_index"]) if i == -1] == \
            [-100] * ex["word_index"].count(-1)


def sentencepiece_like():
    """A tiny Unigram tokenizer with sentencepiece's word-start marker: "rp" and "," become '▁' + the piece."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = ["<pad>", "<s>", "</s>", "<unk>", "\u2581", "rp", ",", "\u2581harga", "\u25815", "000", "\u2581ok"]
    tok = Tokenizer(models.Unigram([(p, -2.0 if p == "\u2581" else -3.0) for p in pieces], unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def test_first_content_reads_a_word_after_a_bare_space_marker(wordpiece):
    # <s> ▁harga ▁ rp ▁5 000 ▁ , ▁ok </s>: "rp" and "," start with the bare marker (id 4), "5000" with "▁5"
    spm = sentencepiece_like()
    assert data.lone_space_id(spm) == 4 and data.lone_space_id(spm.backend_tokenizer) == 4
    assert data.lone_space_id(wordpiece) is None  # WordPiece has no marker: "first-content" changes nothing
    batch, spec = {"tokens": [["harga", "rp", "5000", ",", "ok"]], "tags": [[0, 1, 2, 3, 4]]}, data.get_spec("posp")
    first = data.encode_for_bert(batch, spm, spec, 64)
    content = data.encode_for_bert(batch, spm, spec, 64, word_position="first-content")
    assert first["input_ids"] == content["input_ids"]  # the same input: only where each word is read moves
    assert first["word_index"] == [[1, 2, 4, 6, 8]] and content["word_index"] == [[1, 3, 4, 7, 8]]
    assert content["subword_labels"] == [[-100, 0, -100, 1, 2, -100, -100, 3, 4, -100]]
    # a lone marker that is a whole word (its piece cut off by truncation) is still read where it is
    assert data.first_subword_index([None, 0, 1, None], 2, input_ids=[1, 4, 4, 2], skip_id=4) == [1, 2]
    wp = {"tokens": [["harga", "rp"]], "tags": [[0, 1]]}
    assert data.encode_for_bert(wp, wordpiece, spec, 64, "first-content") == data.encode_for_bert(wp, wordpiece, spec)
    with pytest.raises(ConfigError, match="word_position 'last' is not one of first, first-content"):
        data.encode_for_bert(batch, spm, spec, 64, word_position="last")


@pytest.mark.parametrize("key", ["nergrit", "smsa"])
def test_truncation_counts_what_max_length_cuts_off(wordpiece, tiny_data_dir, key):
    from kdlib import teachers

    spec = data.get_spec(key)
    ds = data.load_split(key, "train", tiny_data_dir, limit=4)
    whole = [len(f["input_ids"]) for f in teachers.bert_features(ds, wordpiece, spec, 512)]
    cut = teachers.truncation(ds, wordpiece, spec, 12)
    assert cut["examples"] == 4 and cut["examples_cut"] == sum(n > 12 for n in whole) > 0
    if spec.is_tagging:  # every word of a cut sentence past the limit is unseen, none of a whole one
        feats = teachers.bert_features(ds, wordpiece, spec, 12)
        assert cut["words"] == sum(len(ex["tags"]) for ex in ds)
        assert 0 < cut["words_cut"] == sum(f["word_index"].count(-1) for f in feats)
    else:
        assert "words" not in cut
    assert teachers.truncation(ds, wordpiece, spec, 512)["examples_cut"] == 0


def test_encode_for_words_positions(tiny_data_dir):
    spec = data.get_spec("facqa")
    ds = data.load_split("facqa", "train", tiny_data_dir, limit=2)
    vocab = data.Vocab.build(data.example_words(ex, spec) for ex in ds)
    enc = ds.map(data.encode_for_words, batched=True, fn_kwargs={"vocab": vocab, "spec": spec})
    ex, raw = enc[0], ds[0]
    start = len(raw["question"]) + 1
    assert ex["word_ids"][start - 1] == vocab.encode([data.SEP])[0]
    assert ex["word_index"] == list(range(start, start + len(raw["tokens"])))
    assert [vocab.itos[ex["word_ids"][i]] for i in ex["word_index"][:3]] == [w.lower() for w in raw["tokens"][:3]]
    short = ds.map(data.encode_for_words, batched=True, fn_kwargs={"vocab": vocab, "spec": spec, "max_words": 20})
    assert len(short[0]["word_ids"]) == 20 and short[0]["word_index"][20 - start] == -1


def test_subset_indices_are_nested_sorted_and_independent_of_the_run_seed():
    small, large = data.subset_indices(100, 10), data.subset_indices(100, 40)
    assert small == sorted(small) and len(set(small)) == 10 and set(small) <= set(large)
    assert data.subset_indices(100, None) == list(range(100)) == data.subset_indices(100, 500)
    assert data.subset_indices(100, 10, seed=1) != small
