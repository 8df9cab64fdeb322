"""kdlib.embeddings: .vec files (header or not, gzip, OOV handling, errors), in-domain gensim vectors, the
embedding matrix a word student starts from, and BERT students with their own pretrained init."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from kdlib import data, distill, embeddings, models, params
from kdlib.errors import ConfigError, DataError

VEC = """5 3
Jakarta 1 2 3
makan 0.5 0.5 0.5
jakarta 9 9 9
nasi -1 0 1
kucing 7 7 7
"""


@pytest.fixture
def vec(tmp_path):
    path = tmp_path / "small.vec"
    path.write_text(VEC, encoding="utf-8")
    return path


def test_vec_file_lookup_is_lower_cased_and_the_first_casing_wins(vec):
    v = embeddings.read_vec(vec)
    assert v.dim == 3 and v.source == "vec:small.vec"
    np.testing.assert_array_equal(v.vector("JAKARTA"), [1, 2, 3])  # "Jakarta" comes before "jakarta"
    assert v.vector("tidak") is None and v.known("Nasi") and not v.known("tidak")


def test_only_wanted_words_are_kept_and_headerless_and_gzip_files_load(vec, tmp_path):
    v = embeddings.read_vec(vec, words=["nasi", "ayam"])
    assert v.vector("nasi") is not None and v.vector("makan") is None
    glove = tmp_path / "glove.txt"
    glove.write_text("makan 1 2\nnasi 3 4\n", encoding="utf-8")
    assert embeddings.read_vec(glove).dim == 2
    zipped = tmp_path / "small.vec.gz"
    with gzip.open(zipped, "wt", encoding="utf-8") as f:
        f.write(VEC)
    np.testing.assert_array_equal(embeddings.read_vec(zipped).vector("nasi"), [-1, 0, 1])
    assert embeddings.source_name(str(zipped)) == "vec-small" and embeddings.source_name("word2vec") == "word2vec"


@pytest.mark.parametrize("text, error, match", [
    ("2 3\nmakan 1 2 3\nnasi 1 2\n", DataError, r"small.vec:3: expected a word and 3 numbers, found 2"),
    ("2 3\nmakan 1 2 x\n", DataError, r"small.vec:2: .* not a number"),
    ("", DataError, "no vector found"),
])
def test_bad_vec_files_name_file_and_line(tmp_path, text, error, match):
    path = tmp_path / "small.vec"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error, match=match):
        embeddings.read_vec(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        embeddings.read_vec(tmp_path / "cc.id.300.vec")
    binary = tmp_path / "cc.id.300.bin"
    binary.write_bytes(b"\xba\xdc\xff\x00\x01")
    with pytest.raises(DataError, match=r"cc.id.300.bin:1: not valid UTF-8 \(byte 0xba at column 1\)"):
        embeddings.read_vec(binary)


def test_embedding_matrix_copies_found_vectors_and_randomises_oov(vec):
    vocab = data.Vocab.build([["makan", "nasi", "ayam", "ayam", "jakarta"]])
    matrix, cover = embeddings.embedding_matrix(embeddings.read_vec(vec, vocab.itos), vocab, seed=0)
    assert matrix.shape == (len(vocab), 3) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[vocab.encode(["nasi"])[0]], [-1, 0, 1])
    np.testing.assert_array_equal(matrix[vocab.pad_id], [0, 0, 0])
    oov = matrix[vocab.encode(["ayam"])[0]]
    assert np.abs(oov).sum() > 0 and not np.isin(oov, [1, 2, 3, 0.5, -1, 0]).all()
    # 4 words (ayam, jakarta, makan, nasi); ayam has no vector -> 1/4 OOV
    assert cover == {"vocab_words": 4, "found": 3, "composed": 0, "oov": 1, "oov_rate": 0.25}
    again, _ = embeddings.embedding_matrix(embeddings.read_vec(vec, vocab.itos), vocab, seed=0)
    np.testing.assert_array_equal(matrix, again)
    # tokens: makan nasi ayam <sep> ayam -> 2 of 4 real tokens lack a vector
    assert embeddings.token_oov_rate(embeddings.read_vec(vec), [["makan", "nasi", "ayam", data.SEP, "Ayam"]]) == 0.5


CORPUS = [["budi", "makan", "nasi", "goreng"], ["ani", "makan", "nasi", "uduk"], ["budi", "minum", "teh"],
          ["ani", "minum", "kopi"]] * 20


def test_in_domain_vectors_are_deterministic_and_trained_once(tmp_path):
    a = embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path / "a")
    b = embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path / "b")
    np.testing.assert_array_equal(a.vector("nasi"), b.vector("nasi"))
    assert a.vector("sate") is None and a.known("Nasi")
    folders = lambda: sorted(p for p in (tmp_path / "a").iterdir() if p.is_dir())  # noqa: E731 (not the locks)
    cached = folders()
    assert len(cached) == 1 and cached[0].name.startswith("word2vec-8d-")
    embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path / "a")
    assert folders() == cached
    other = embeddings.train_in_domain("word2vec", CORPUS[:40], 8, tmp_path / "a")
    assert len(folders()) == 2 and other.dim == 8


def test_runs_starting_together_train_the_vectors_once(tmp_path, monkeypatch):
    import threading

    calls, real = [], embeddings._train_to

    def slow_train(*args):
        calls.append(1)
        threading.Event().wait(0.3)  # the other run arrives while this one trains
        real(*args)

    monkeypatch.setattr(embeddings, "_train_to", slow_train)
    out = []
    runs = [threading.Thread(target=lambda: out.append(embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path)))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert len(calls) == 1 and len(out) == 2
    np.testing.assert_array_equal(out[0].vector("nasi"), out[1].vector("nasi"))


def test_a_damaged_vector_cache_is_retrained_or_named(tmp_path):
    first = embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    for f in folder.iterdir():  # emptied by hand: trained again, the same vectors
        f.unlink()
    again = embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path)
    np.testing.assert_array_equal(first.vector("nasi"), again.vector("nasi"))
    (folder / "vectors.kv").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"cached word2vec vectors in .*word2vec-8d-.* cannot be read.*delete"):
        embeddings.train_in_domain("word2vec", CORPUS, 8, tmp_path)


def test_fasttext_composes_vectors_for_unseen_words(tmp_path):
    ft = embeddings.train_in_domain("fasttext", CORPUS, 8, tmp_path)
    assert not ft.known("nasinya") and ft.vector("nasinya").shape == (8,)
    vocab = data.Vocab.build([["nasi", "nasinya"]])
    _, cover = embeddings.embedding_matrix(ft, vocab)
    assert cover["oov"] == 0 and cover["composed"] == 1


def test_in_domain_corpus_uses_train_text_and_never_eval_text(_tiny_master, tmp_path):
    from kdlib.augment import eval_texts, normalise

    extra = tmp_path / "mine.txt"
    extra.write_text("Teks Saya Sendiri\n", encoding="utf-8")
    corpus = embeddings.in_domain_corpus(_tiny_master, extra)
    held_out = set().union(*(eval_texts(s, _tiny_master) for s in data.DATASETS.values()))
    assert ["teks", "saya", "sendiri"] in corpus
    assert not {normalise(words) for words in corpus} & held_out
    first = data.read_records(data.get_spec("smsa"), "train", _tiny_master)[0]["text"]
    smsa_train = normalise(data.word_tokenize(first))
    assert smsa_train in {normalise(words) for words in corpus} or smsa_train in held_out
    with pytest.raises(ConfigError, match="embedding_text"):
        embeddings.in_domain_corpus(_tiny_master, tmp_path / "missing.txt")


def _params(tmp_path, **kwargs) -> params.AblationParams:
    return params.AblationParams(**{"dataset": "smsa", "student": "bilstm", "teacher_dir": "unused",
                                  "out_dir": str(tmp_path / "run"), **kwargs})


def test_a_word_student_starts_from_the_vec_file_and_reports_oov(vec, tmp_path):
    vocab = data.Vocab.build([["makan", "nasi", "ayam"]])
    p = _params(tmp_path, embedding=str(vec), freeze_embeddings=True, student_options={"emb_dim": 16, "hidden": 8})
    options, info = distill._word_embeddings(p, data.get_spec("smsa"), vocab, [["makan", "ayam"]],
                                          [{"text": "nasi kucing goreng", "label": 0}], tmp_path)
    assert options["emb_dim"] == 3 and options["freeze_embeddings"] is True  # the file's dimension wins
    assert info["source"] == "vec-small" and info["oov_rate"] == pytest.approx(1 / 3)
    # test coverage is the file's, not the vocabulary's: kucing has a vector though the student never saw it
    assert info["train_token_oov"] == 0.5 and info["test_token_oov"] == pytest.approx(1 / 3)
    model = models.build_student("bilstm", data.get_spec("smsa"), vocab=vocab, **options)
    assert not model.embedding.weight.requires_grad
    np.testing.assert_array_equal(model.embedding.weight[vocab.encode(["nasi"])[0]].detach().numpy(), [-1, 0, 1])
    plain, info = distill._word_embeddings(_params(tmp_path), data.get_spec("smsa"), vocab, [], [], tmp_path)
    assert "embeddings" not in plain and info == {"source": "random", "freeze": False}


def test_a_pretrained_bert_student_with_its_own_tokenizer(tmp_path):
    tokenizer = data.train_wordpiece(["budi makan nasi", "ani minum teh"], vocab_size=80)
    mini = models.save_random_bert(tmp_path / "mini", tokenizer, layers=2, hidden=128, heads=2, intermediate=512)
    teacher = tmp_path / "teacher"
    p = _params(tmp_path, student="bert-tiny", student_options={"init": str(mini)})
    assert distill.student_tokenizer_dir(p.student_options, teacher / "model") == mini
    plain = _params(tmp_path, student="bert-tiny").student_options
    assert distill.student_tokenizer_dir(plain, teacher / "model") == teacher / "model"
    student = models.build_student("bert-tiny", data.get_spec("smsa"), tokenizer=tokenizer, init=str(mini),
                                   pieces="full")
    assert student.hf.config.vocab_size == len(tokenizer)
    wrong = models.save_random_bert(tmp_path / "wrong", tokenizer, layers=2, hidden=64, heads=2)
    with pytest.raises(ConfigError, match="hidden_size is 64 there but 128 for bert-tiny"):
        models.build_student("bert-tiny", data.get_spec("smsa"), tokenizer=tokenizer, init=str(wrong), pieces="full")
    # a folder without a tokenizer is read with the teacher's, so its vocabulary must be the teacher's
    for f in mini.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()
    p = _params(tmp_path, student="bert-tiny", student_options={"init": str(mini)})
    assert distill.student_tokenizer_dir(p.student_options, teacher / "model") == teacher / "model"
    teacher_tokenizer = data.train_wordpiece(["lain sekali kosakata guru"] * 3, vocab_size=40)
    with pytest.raises(ConfigError, match=f"vocab_size is {len(tokenizer)} there but {len(teacher_tokenizer)}"):
        models.build_student("bert-tiny", data.get_spec("smsa"), tokenizer=teacher_tokenizer, init=str(mini),
                             pieces="full")
