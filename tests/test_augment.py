"""kdlib.augment: Tang et al.'s rules, label preservation on tagging tasks, unlabelled pools, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from kdlib import augment, data
from kdlib.augment import MASK_WORD, PosLexicon, TangRules
from kdlib.data import IGNORE_INDEX
from kdlib.errors import ConfigError

LEXICON = PosLexicon.build([(["Budi", "makan", "nasi", "."], ["B-NNP", "B-VBT", "B-NNO", "B-SYM"]),
                            (["Ani", "minum", "teh", "dan", "kopi"], ["B-NNP", "B-VBT", "B-NNO", "B-CCN", "B-NNO"]),
                            (["teh", "manis"], ["B-NNO", "B-ADJ"])])


def test_lexicon_tags_words_and_samples_by_frequency():
    assert LEXICON.tag("TEH") == "NNO" and LEXICON.tag("tidak") is None
    assert LEXICON.words["NNO"] == ["teh", "kopi", "nasi"]  # teh twice, then alphabetical
    rng = np.random.default_rng(0)
    draws = [LEXICON.sample("NNO", rng) for _ in range(4000)]
    assert draws.count("teh") / 4000 == pytest.approx(0.5, abs=0.03)
    assert LEXICON.sample("XYZ", rng) is None


@pytest.mark.parametrize("rules, check", [
    (TangRules(p_mask=1.0, p_pos=0.0, p_ng=0.0), lambda out: out == [MASK_WORD] * 3),
    (TangRules(p_mask=0.0, p_pos=1.0, p_ng=0.0),
     lambda out: LEXICON.tag(out[0]) == "NNP" and LEXICON.tag(out[1]) == "VBT" and out[2] == "besok"),
    (TangRules(p_mask=0.0, p_pos=0.0, p_ng=0.0), lambda out: out == ["Budi", "makan", "besok"]),
])
def test_each_rule_alone(rules, check):
    assert check(augment.edit_words(["Budi", "makan", "besok"], rules, LEXICON, np.random.default_rng(0)))


def test_editable_positions_and_given_tags_are_respected():
    rng = np.random.default_rng(0)
    out = augment.edit_words(["a", "b", "c"], TangRules(p_mask=1.0, p_pos=0.0), LEXICON, rng,
                             editable=[True, False, True])
    assert out == [MASK_WORD, "b", MASK_WORD]
    out = augment.edit_words(["x", "y"], TangRules(p_mask=0.0, p_pos=1.0), LEXICON, rng, tags=["CCN", "ADJ"])
    assert out == ["dan", "manis"]  # the only words of those tags


def test_ngram_windows_are_contiguous_and_at_most_max_ng_long():
    rng = np.random.default_rng(0)
    rules = TangRules(p_ng=1.0, max_ng=3)
    windows = [augment.ngram_window(10, rules, rng) for _ in range(500)]
    assert all(1 <= end - start <= 3 and 0 <= start < end <= 10 for start, end in windows)
    assert {end - start for start, end in windows} == {1, 2, 3}
    assert augment.ngram_window(10, TangRules(p_ng=0.0), rng) is None


@pytest.mark.parametrize("kwargs, match", [({"p_mask": 1.5}, "p_mask must be a probability"),
                                           ({"p_mask": 0.6, "p_pos": 0.6}, "p_mask \\+ p_pos"),
                                           ({"max_ng": 0}, "max_ng must be at least 1")])
def test_bad_rules_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TangRules(**kwargs)


@pytest.mark.parametrize("key", ["smsa", "casa", "wrete", "nergrit", "posp", "facqa"])
def test_tang_transfer_sets_are_deterministic_and_unlabelled(key, _tiny_master):
    spec = data.get_spec(key)
    train = data.load_split(key, "train", _tiny_master, limit=20)
    first, again, other = (augment.build_transfer_set("tang", 3, train, spec, seed=seed, data_dir=_tiny_master)
                           for seed in (0, 0, 1))
    assert first.extra == again.extra and first.extra != other.extra
    assert len(first) == len(train) + first.info["extra_examples"] and 30 <= first.info["extra_examples"] <= 40
    contents = [augment._content(ex, spec) for ex in [*train, *first.extra]]
    assert len(set(contents)) == len(contents)  # no duplicate, no copy of a train example
    if spec.shape == "aspect":
        assert all(ex["labels"] == [IGNORE_INDEX] * len(spec.aspects) for ex in first.extra)
    elif not spec.is_tagging:
        assert all(ex["label"] == IGNORE_INDEX for ex in first.extra)
    assert any(MASK_WORD in data.example_words(ex, spec) for ex in first.extra)


def test_pairs_edit_one_side_or_both_and_are_never_cut(_tiny_master):
    """Tang et al.'s pair script: one sentence edited 2/3 of the time, both 1/3; every word keeps its place."""
    spec = data.get_spec("wrete")
    train = data.load_split("wrete", "train", _tiny_master, limit=20)
    rules = TangRules(p_mask=0.3, p_pos=0.0, p_ng=1.0)  # p_ng 1: a single text would always be cut
    rng = np.random.default_rng(0)
    sides = []
    for example in train:
        for _ in range(30):
            new = augment.augment_example(example, spec, rules, LEXICON, rng)
            edited = []
            for key in ("text_a", "text_b"):
                before, after = data.word_tokenize(example[key]), data.word_tokenize(new[key])
                assert len(after) == len(before)  # never an n-gram of the sentence
                assert all(w == v or w == MASK_WORD for w, v in zip(after, before))
                edited.append(after != before)
            sides.append(sum(edited))
            assert new["label"] == IGNORE_INDEX
    both, one = sides.count(2) / len(sides), sides.count(1) / len(sides)
    assert 0.25 < both < 0.42 and one > 0.5  # 1/3 both; one side (or none, when no word drew a mask) otherwise


def _sources(extra: dict, train: list[dict]) -> list[tuple[dict, int]]:
    """The train examples (and offsets) an augmented tagging example may come from: same tags, as a window."""
    out = []
    for ex in train:
        n, tags = len(extra["tags"]), ex["tags"]
        out += [(ex, i) for i in range(len(tags) - n + 1) if tags[i:i + n] == extra["tags"]]
    return out


@pytest.mark.parametrize("key", ["nergrit", "posp", "facqa"])
def test_tagging_edits_preserve_the_gold_tags(key, _tiny_master):
    spec = data.get_spec(key)
    train = data.load_split(key, "train", _tiny_master, limit=20).to_list()
    rules = TangRules(p_mask=0.3, p_pos=0.3, p_ng=0.5)
    ts = augment.build_transfer_set("tang", 4, data.datasets.Dataset.from_list(train), spec, rules=rules,
                                    data_dir=_tiny_master)
    lexicon = augment.pos_lexicon(key if key in augment.POS_DATASETS else "posp", _tiny_master)
    for extra in ts.extra:
        assert len(extra["tokens"]) == len(extra["tags"])
        matches = _sources(extra, train)
        assert matches, extra
        ok = False
        for source, offset in matches:
            if key == "facqa" and extra["question"] != source["question"]:
                continue  # the question is never edited
            window = source["tokens"][offset:offset + len(extra["tokens"])]
            tags = [spec.labels[t] for t in extra["tags"]]
            changed = [(w, s, t) for w, s, t in zip(extra["tokens"], window, tags) if w != s]
            if key == "posp":  # a replacement has the gold tag of the word it replaces
                ok = all(w == MASK_WORD or w in lexicon.words[augment._bare_tag(t)] for w, _, t in changed)
            else:  # only O words change
                ok = all(t == "O" for _, _, t in changed)
            first, after = tags[0], offset + len(tags)
            ok = ok and not augment._is_inside(first) and (
                after >= len(source["tags"]) or not augment._is_inside(spec.labels[source["tags"][after]]))
            if ok:
                break
        assert ok, extra


def test_sizes_train_and_errors(_tiny_master):
    spec = data.get_spec("smsa")
    train = data.load_split("smsa", "train", _tiny_master, limit=10)
    plain = augment.build_transfer_set("train", 1, train, spec)
    assert plain.extra == [] and len(plain) == 10 and plain.name == "train-x1"
    with pytest.raises(ConfigError, match="transfer_size 1"):
        augment.build_transfer_set("train", 5, train, spec)
    with pytest.raises(ConfigError, match=">= 1"):
        augment.build_transfer_set("tang", 0.5, train, spec)
    with pytest.raises(ConfigError, match="neither one of"):
        augment.build_transfer_set("/no/such/file.txt", 2, train, spec)
    assert augment.transfer_name("/data/my texts.txt", 5) == "file-my_texts-x5"


def test_pools_never_hold_the_targets_eval_texts(_tiny_master, tmp_path):
    spec = data.get_spec("smsa")
    test_text = data.read_records(spec, "test", _tiny_master)[0]["text"]
    train = data.load_split("smsa", "train", _tiny_master, limit=10)
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join([test_text, "kalimat baru satu", "kalimat baru dua", "kalimat baru satu",
                               train[0]["text"], "", "kalimat baru tiga"]), encoding="utf-8")
    ts = augment.build_transfer_set(str(pool), 2, train, spec, data_dir=_tiny_master)
    assert ts.info["pool_excluded"] == 2 and ts.info["pool_texts"] == 3  # test + train text out, duplicate once
    assert sorted(ex["text"] for ex in ts.extra) == ["kalimat baru dua", "kalimat baru satu", "kalimat baru tiga"]
    assert ts.name == "file-pool-x2" and all(ex["label"] == IGNORE_INDEX for ex in ts.extra)

    indonlu = augment.build_transfer_set("indonlu", 2, train, spec, data_dir=_tiny_master)
    own = {augment.normalise(data.word_tokenize(r["text"])) for s in data.SPLITS
           for r in data.read_records(spec, s, _tiny_master)}
    assert len(indonlu.extra) == 10
    assert not own & {augment.normalise(data.word_tokenize(ex["text"])) for ex in indonlu.extra}


def test_pool_examples_per_shape_and_facqa_refused():
    texts = [["a", "b"], ["c"], ["d", "e", "f"], ["g"]]
    rng = np.random.default_rng(0)
    pairs = augment.pool_examples(texts, data.get_spec("wrete"), 5, rng)
    assert len(pairs) == 2 and all(p["label"] == IGNORE_INDEX for p in pairs)
    tagged = augment.pool_examples(texts, data.get_spec("nergrit"), 2, rng)
    assert all(ex["tags"] == [IGNORE_INDEX] * len(ex["tokens"]) for ex in tagged)
    with pytest.raises(ConfigError, match="FacQA"):
        augment.pool_examples(texts, data.get_spec("facqa"), 2, rng)


def test_the_teacher_reads_its_mask_token_and_a_bert_student_its_unk(_tiny_master):
    spec = data.get_spec("nergrit")
    examples = [{"tokens": ["Budi", MASK_WORD, "Jakarta"], "tags": [6, 5, 3]}]
    tokenizer = data.train_wordpiece(["budi ke jakarta", "ani di bandung"], vocab_size=60)
    view = augment.replace_mask(examples, spec, tokenizer.mask_token)
    assert view[0]["tokens"] == ["Budi", "[MASK]", "Jakarta"] and examples[0]["tokens"][1] == MASK_WORD
    enc = tokenizer(view[0]["tokens"], is_split_into_words=True)
    assert tokenizer.mask_token_id in enc["input_ids"]
    text = augment.replace_mask([{"text": f"saya {MASK_WORD} makan", "label": -100}], data.get_spec("smsa"), "[UNK]")
    assert text[0]["text"] == "saya [UNK] makan"
    assert data.word_tokenize(f"saya {MASK_WORD}") == ["saya", MASK_WORD]  # one word for word students
