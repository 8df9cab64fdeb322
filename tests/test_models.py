"""kdlib.models on tiny slices of the real data: the unit-level logit contract, padding, saving, the registry."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from kdlib import data, models, params
from kdlib.errors import ConfigError

DATASET_OF_SHAPE = {"single": "smsa", "pair": "wrete", "aspect": "casa", "tagging": "nerp", "qa": "facqa"}
MAX_LENGTH = 64  # sub-words; FacQA passages get truncated, so some words have word_index -1


@dataclass
class Tiny:
    sets: dict  # shape -> datasets.Dataset of 4 train examples
    tokenizer: object
    vocab: data.Vocab
    root: Path  # a module-wide scratch folder

    def spec(self, shape: str) -> data.DatasetSpec:
        return data.get_spec(DATASET_OF_SHAPE[shape])

    def teacher_dir(self, shape: str) -> Path:
        """A saved 2-layer random 'teacher' with this shape's head (built once), to cut pruned students from."""
        folder = self.root / f"teacher-{shape}"
        if not folder.exists():
            encoder = models.save_random_bert(self.root / "encoder", self.tokenizer)
            models.BertTaskModel.from_encoder(encoder, self.spec(shape)).save_pretrained(folder)
        return folder


@pytest.fixture(scope="module")
def tiny(_tiny_master, tmp_path_factory) -> Tiny:
    sets = {shape: data.load_split(key, "train", _tiny_master, limit=4) for shape, key in DATASET_OF_SHAPE.items()}
    words = [data.example_words(ex, data.get_spec(DATASET_OF_SHAPE[s])) for s, ds in sets.items() for ex in ds]
    tokenizer = data.train_wordpiece((" ".join(w) for w in words), vocab_size=300)
    return Tiny(sets, tokenizer, data.Vocab.build(words), tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def random_bert(tiny, tmp_path_factory):
    return models.save_random_bert(tmp_path_factory.mktemp("random-bert"), tiny.tokenizer)


# Batches are built here, not with train.py's collator, so these tests depend on models.py alone.

def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def bert_batch(tiny: Tiny, shape: str, rows: list[int] | None = None) -> dict[str, torch.Tensor]:
    ds = tiny.sets[shape] if rows is None else tiny.sets[shape].select(rows)
    enc = data.encode_for_bert(ds[:], tiny.tokenizer, tiny.spec(shape), max_length=MAX_LENGTH)
    batch = {"input_ids": _pad(enc["input_ids"], tiny.tokenizer.pad_token_id),
             "attention_mask": _pad(enc["attention_mask"], 0), "token_type_ids": _pad(enc["token_type_ids"], 0)}
    if "word_index" in enc:
        batch["word_index"] = _pad(enc["word_index"], -1)
    return batch


def word_batch(tiny: Tiny, shape: str, rows: list[int] | None = None) -> dict[str, torch.Tensor]:
    ds = tiny.sets[shape] if rows is None else tiny.sets[shape].select(rows)
    enc = data.encode_for_words(ds[:], tiny.vocab, tiny.spec(shape), max_words=MAX_LENGTH)
    batch = {"word_ids": _pad(enc["word_ids"], tiny.vocab.pad_id),
             "lengths": torch.tensor([len(w) for w in enc["word_ids"]])}
    if "word_index" in enc:
        batch["word_index"] = _pad(enc["word_index"], -1)
    return batch


def batch_for(student: str, tiny: Tiny, shape: str, rows: list[int] | None = None) -> dict[str, torch.Tensor]:
    make = word_batch if params.get_student(student).kind == "word" else bert_batch
    return make(tiny, shape, rows)


def build(student: str, tiny: Tiny, shape: str, **overrides) -> nn.Module:
    """A student; BERT students keep every piece of the tiny tokenizer unless `used_ids` says otherwise."""
    overrides.setdefault("used_ids", range(len(tiny.tokenizer)))
    if student == "pruned":
        overrides.setdefault("layers", 1)
        overrides.setdefault("teacher_model_dir", tiny.teacher_dir(shape))
    return models.build_student(student, tiny.spec(shape), vocab=tiny.vocab, tokenizer=tiny.tokenizer, **overrides)


def expected_shape(spec: data.DatasetSpec, batch: dict) -> tuple[int, ...]:
    n = len(next(iter(batch.values())))
    if spec.shape == "aspect":
        return (n, len(spec.aspects), spec.num_labels)
    if spec.is_tagging:
        return (n, batch["word_index"].shape[1], spec.num_labels)
    return (n, spec.num_labels)


# ----------------------------------------------------------------------------------------------------------------

# Every student x every task shape. BERT-Mini and BERT-Small share BERT-Tiny's code and differ in size only (6 s a
# case here): the fast tier checks them on one shape, the slow tier on every shape.
STUDENT_SHAPES = [pytest.param(student, shape, marks=[pytest.mark.slow]
                               if student in ("bert-mini", "bert-small") and shape != "single" else [])
                  for student in params.STUDENTS for shape in data.SHAPES]


@pytest.mark.parametrize("student, shape", STUDENT_SHAPES)
def test_every_student_gives_unit_logits_and_gradients(student, shape, tiny):
    torch.manual_seed(0)
    model = build(student, tiny, shape)
    batch = batch_for(student, tiny, shape)
    batch["labels"] = torch.zeros(1)  # models ignore keys they do not use
    logits = model(batch).logits
    assert logits.shape == expected_shape(tiny.spec(shape), batch)
    assert torch.isfinite(logits).all()
    logits.pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    embedding = next(model.parameters())  # the word/sub-word embedding matrix comes first in every model
    assert embedding.grad.abs().sum() > 0


def test_gather_words_reads_positions_and_clamps_padding():
    token_logits = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    word_index = torch.tensor([[2, 0, -1], [3, 1, 1]])
    out = models.gather_words(token_logits, word_index)
    assert out.shape == (2, 3, 3)
    assert torch.equal(out[0, 0], token_logits[0, 2]) and torch.equal(out[1, 0], token_logits[1, 3])
    assert torch.equal(out[0, 2], token_logits[0, 0])  # -1 reads position 0: finite, masked later


@pytest.mark.parametrize("shape", ["tagging", "qa"])
def test_bert_word_logits_are_the_token_logits_at_word_index(shape, tiny, random_bert):
    model = models.BertTaskModel.from_encoder(random_bert, tiny.spec(shape)).eval()
    batch = bert_batch(tiny, shape)
    with torch.no_grad():
        words = model(batch).logits
        tokens = model.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          token_type_ids=batch["token_type_ids"]).logits
    index = batch["word_index"]
    checked = 0
    for b, j in (index >= 0).nonzero().tolist():
        assert torch.equal(words[b, j], tokens[b, index[b, j]])
        checked += 1
    assert checked > 0
    if shape == "qa":  # the passage is the second input: its words sit after the question
        assert (batch["token_type_ids"].gather(1, index.clamp(min=0))[index >= 0] == 1).all()


def test_bert_aspect_logits_are_the_head_reshaped(tiny, random_bert):
    spec = tiny.spec("aspect")
    model = models.BertTaskModel.from_encoder(random_bert, spec).eval()
    batch = bert_batch(tiny, "aspect")
    with torch.no_grad():
        logits = model(batch).logits
        flat = model.hf(**batch).logits
    assert flat.shape[1] == len(spec.aspects) * spec.num_labels
    assert torch.equal(logits[:, 1], flat[:, spec.num_labels:2 * spec.num_labels])


@pytest.mark.parametrize("shape", ["single", "pair", "tagging"])
@pytest.mark.parametrize("student", ["bilstm", "cnn"])
def test_word_students_ignore_batch_padding(student, shape, tiny):
    torch.manual_seed(0)
    model = build(student, tiny, shape).eval()
    lengths = word_batch(tiny, shape)["lengths"].tolist()
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    assert lengths[short] < lengths[long]
    with torch.no_grad():
        alone = model(word_batch(tiny, shape, [short])).logits[0]
        padded = model(word_batch(tiny, shape, [short, long])).logits[0]
    assert torch.allclose(alone, padded[:len(alone)], atol=1e-6)


@pytest.mark.parametrize("shape", ["single", "tagging"])
@pytest.mark.parametrize("student", ["bilstm", "cnn"])
def test_word_students_ignore_padding_on_a_one_word_example(student, shape, tiny):
    # Over one word about half the BiLSTM's state dimensions are negative, so a max-pool that let the zero states
    # of padding in would change the output (real sentences have enough words to hide that).
    torch.manual_seed(0)
    model = build(student, tiny, shape).eval()
    alone = {"word_ids": torch.tensor([[7]]), "lengths": torch.tensor([1]), "word_index": torch.tensor([[0]])}
    padded = {"word_ids": torch.tensor([[7, 0, 0, 0, 0, 0], [3, 4, 5, 6, 8, 9]]), "lengths": torch.tensor([1, 6]),
              "word_index": torch.tensor([[0, -1, -1, -1, -1, -1], [0, 1, 2, 3, 4, 5]])}
    with torch.no_grad():
        a, b = model(alone).logits[0], model(padded).logits[0]
    assert torch.allclose(a, b[:len(a)], atol=1e-6)


@pytest.mark.parametrize("student", ["bilstm", "cnn"])
def test_siamese_pair_students_encode_each_sentence_alone(student, tiny):
    """pair: siamese (the default) classifies [a, b, a*b, |a-b|] of the two sentences, each pooled on its own."""
    torch.manual_seed(0)
    model = build(student, tiny, "pair").eval()
    assert model.siamese and model.head.in_features == 4 * model.pool(word_batch(tiny, "single")).shape[1]
    batch = word_batch(tiny, "pair")
    vocab, spec = tiny.vocab, tiny.spec("pair")
    joined = [vocab.encode(data.example_words(ex, spec))[:MAX_LENGTH] for ex in tiny.sets["pair"]]  # as batched
    cut = [ids.index(models.SEP_ID) for ids in joined]
    sides = [[ids[:i] for ids, i in zip(joined, cut)], [ids[i + 1:] for ids, i in zip(joined, cut)]]
    singles = [{"word_ids": _pad(ids, vocab.pad_id), "lengths": torch.tensor([len(i) for i in ids])} for ids in sides]
    with torch.no_grad():
        a, b = (model.pool(single) for single in singles)
        expected = model.head(torch.cat([a, b, a * b, (a - b).abs()], dim=-1))
        assert torch.allclose(model(batch).logits, expected, atol=1e-5)
        # the second sentence's words move the output only through b: a pair with a changed second sentence keeps a
        changed = dict(batch, word_ids=batch["word_ids"].clone())
        changed["word_ids"][0, cut[0] + 1] = 3
        split = models.split_pair(changed, vocab.pad_id)
        assert torch.equal(split["word_ids"][0], models.split_pair(batch, vocab.pad_id)["word_ids"][0])
    assert spec.shape == "pair"


@pytest.mark.parametrize("student", ["bilstm", "cnn"])
def test_concat_pair_students_and_models_saved_before_the_option_read_the_joined_text(student, tiny, tmp_path):
    torch.manual_seed(0)
    model = build(student, tiny, "pair", pair="concat").eval()
    assert not model.siamese
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["pair"]  # a model saved before the option existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = models.load_model(tmp_path).eval()
    batch = word_batch(tiny, "pair")
    with torch.no_grad():
        assert not loaded.siamese and torch.equal(model(batch).logits, loaded(batch).logits)
    with pytest.raises(ConfigError, match="pair must be one of siamese, concat"):
        build(student, tiny, "pair", pair="joined")


@pytest.mark.parametrize("student, shape", [("bilstm", "aspect"), ("bilstm", "qa"), ("cnn", "pair"),
                                            ("cnn", "tagging"), ("bert-tiny", "aspect"), ("bert-mini", "tagging"),
                                            ("bert-small", "single")])
def test_save_and_load_round_trip(student, shape, tiny, tmp_path):
    torch.manual_seed(0)
    model = build(student, tiny, shape).eval()
    batch = batch_for(student, tiny, shape)
    model.save_pretrained(tmp_path)
    loaded = models.load_model(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)


def test_word_student_saves_its_vocab_alongside(tiny, tmp_path):
    build("cnn", tiny, "single").save_pretrained(tmp_path, vocab=tiny.vocab)
    assert data.Vocab.load(tmp_path / "vocab.json").itos == tiny.vocab.itos


def test_teacher_from_a_random_bert_folder_round_trips(tiny, random_bert, tmp_path):
    from transformers import BertModel

    spec = tiny.spec("pair")
    teacher = models.BertTaskModel.from_encoder(random_bert, spec).eval()
    encoder = BertModel.from_pretrained(random_bert)
    assert torch.equal(teacher.word_embeddings().weight, encoder.get_input_embeddings().weight)
    assert teacher.hf.config.id2label[1] == "Entail_or_Paraphrase"
    teacher.save_pretrained(tmp_path)
    loaded = models.load_model(tmp_path).eval()
    batch = bert_batch(tiny, "pair")
    with torch.no_grad():
        assert torch.equal(teacher(batch).logits, loaded(batch).logits)
    assert loaded.spec.key == "wrete"


def test_save_random_bert_depends_on_the_seed_only(tiny, tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(123)
    a = load_file(models.save_random_bert(tmp_path / "a", tiny.tokenizer) / "model.safetensors")
    after_a = torch.rand(1)
    torch.manual_seed(123)
    b = load_file(models.save_random_bert(tmp_path / "b", tiny.tokenizer) / "model.safetensors")
    c = load_file(models.save_random_bert(tmp_path / "c", tiny.tokenizer, seed=1) / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_a)  # the caller's RNG stream was left alone


def test_teacher_loads_a_checkpoint_without_pooler(tiny, tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=len(tiny.tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, pad_token_id=tiny.tokenizer.pad_token_id)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    teacher = models.BertTaskModel.from_encoder(tmp_path, tiny.spec("single"))
    assert teacher.hf.bert.pooler is not None
    assert teacher.pooling == "mean"  # auto: no pooler weights in the checkpoint, so the head reads the mean
    assert torch.isfinite(teacher(bert_batch(tiny, "single")).logits).all()


@pytest.mark.parametrize("shape", ["single", "aspect"])
def test_mean_pooling_head_reads_the_masked_mean_of_the_last_states(shape, tiny, random_bert, tmp_path):
    model = models.BertTaskModel.from_encoder(random_bert, tiny.spec(shape), pooling="mean").eval()
    assert models.BertTaskModel.from_encoder(random_bert, tiny.spec(shape)).pooling == "cls"  # it has a pooler
    batch = bert_batch(tiny, shape)
    with torch.no_grad():
        logits = model(batch).logits
        states = model.hf.bert(**batch).last_hidden_state
        for b in range(states.shape[0]):  # each example alone, without its padding
            n = int(batch["attention_mask"][b].sum())
            expected = model.hf.classifier(states[b, :n].mean(dim=0))
            assert torch.allclose(logits[b].flatten(), expected, atol=1e-5)
        padded = {k: torch.cat([v, torch.full_like(v[:, :3], 0 if k != "input_ids" else tiny.tokenizer.pad_token_id)],
                               dim=1) for k, v in batch.items()}
        assert torch.allclose(model(padded).logits, logits, atol=1e-5)  # padding never changes the mean
        assert not torch.allclose(model.hf(**batch).logits.view_as(logits), logits)  # it is not the [CLS] head
    reloaded = models.load_model(model.save_pretrained(tmp_path / "m")).eval()
    assert reloaded.pooling == "mean"
    with torch.no_grad():
        assert torch.allclose(reloaded(batch).logits, logits, atol=1e-6)


def test_pooling_names_are_checked(tiny, random_bert):
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        models.BertTaskModel.from_encoder(random_bert, tiny.spec("single"), pooling="max")


def test_offline_mode_never_asks_the_hub(monkeypatch, tiny):
    from transformers import AutoModelForSequenceClassification

    seen = {}

    def fake_from_pretrained(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", fake_from_pretrained)
    with pytest.raises(OSError, match="stop here"):
        models.BertTaskModel.from_encoder("some-org/some-bert", tiny.spec("single"))
    assert seen["local_files_only"] is True


def test_head_size_must_match_the_dataset(tiny, random_bert):
    tagger = models.BertTaskModel.from_encoder(random_bert, tiny.spec("tagging"))  # NERP: 11 tags
    with pytest.raises(ConfigError, match="11 outputs but keps needs 3"):
        models.BertTaskModel(tagger.hf, data.get_spec("keps"))


@pytest.mark.parametrize("size, layers, hidden, heads", [("bert-tiny", 2, 128, 2), ("bert-mini", 4, 256, 4),
                                                         ("bert-small", 4, 512, 8)])
def test_bert_student_config_sizes(size, layers, hidden, heads, tiny):
    config = models.bert_student_config(size, tiny.tokenizer, dropout=0.3)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, hidden, heads)
    assert config.intermediate_size == 4 * hidden and config.vocab_size == len(tiny.tokenizer)
    assert config.pad_token_id == tiny.tokenizer.pad_token_id and config.type_vocab_size == 2
    assert config.hidden_dropout_prob == 0.3 and config.max_position_embeddings == 512
    with pytest.raises(ConfigError, match="hidden_sise"):
        models.bert_student_config(size, tiny.tokenizer, hidden_sise=3)


def test_bert_student_from_a_pretrained_folder_of_the_same_shape(tiny, tmp_path):
    from transformers import BertModel

    folder = models.save_random_bert(tmp_path, tiny.tokenizer, layers=2, hidden=128, heads=2, intermediate=512)
    student = build("bert-tiny", tiny, "single", init=str(folder), dropout=0.2)
    pretrained = BertModel.from_pretrained(folder).get_input_embeddings().weight
    assert torch.equal(student.word_embeddings().weight, pretrained)
    assert student.hf.config.hidden_dropout_prob == 0.2


def test_bert_student_from_a_folder_of_another_shape_is_refused(tiny, tmp_path):
    folder = models.save_random_bert(tmp_path, tiny.tokenizer, hidden=32)
    with pytest.raises(ConfigError, match="hidden_size is 32 there but 128 for bert-tiny.*init: random"):
        build("bert-tiny", tiny, "single", init=str(folder))


def test_unknown_student_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown student 'bilstn'. Did you mean 'bilstm'"):
        params.get_student("bilstn")
    assert {s.kind for s in params.STUDENTS.values()} == {"word", "subword"}
    assert set(params.STUDENTS) == {"bilstm", "cnn", "bert-tiny", "bert-mini", "bert-small", "pruned"}


def test_build_student_names_bad_options_and_missing_inputs(tiny):
    spec = tiny.spec("single")
    with pytest.raises(ConfigError, match="unknown option\\(s\\) hidden for student 'cnn'; known: .*filters"):
        models.build_student("cnn", spec, vocab=tiny.vocab, hidden=5)
    with pytest.raises(ConfigError, match="needs vocab="):
        models.build_student("bilstm", spec, tokenizer=tiny.tokenizer)
    with pytest.raises(ConfigError, match="needs tokenizer="):
        models.build_student("bert-mini", spec, vocab=tiny.vocab)


def test_pretrained_word_embeddings_are_copied_and_frozen(tiny):
    vectors = torch.randn(len(tiny.vocab), 16)
    model = build("bilstm", tiny, "single", embeddings=vectors, freeze_embeddings=True, hidden=8)
    assert model.config["emb_dim"] == 16  # taken from the vectors
    assert torch.equal(model.embedding.weight, vectors) and not model.embedding.weight.requires_grad
    with pytest.raises(ConfigError, match=r"shape \(10, 7\) but the student needs \(10, 8\)"):
        models.BiLSTMStudent(10, 2, "single", emb_dim=8, embeddings=torch.zeros(10, 7))


def test_cnn_handles_short_sequences_and_even_kernels():
    one_word = {"word_ids": torch.tensor([[5, 0, 0]]), "lengths": torch.tensor([1]),
                "word_index": torch.tensor([[0]])}
    classifier = models.CNNStudent(10, 3, "single", emb_dim=8, filters=4)  # kernels 3, 4, 5 over one word
    assert classifier(one_word).logits.shape == (1, 3)
    # even kernels must keep the length: the last position (2) exists only if the output is as long as the input
    tagger = models.CNNStudent(10, 3, "tagging", emb_dim=8, filters=4, kernel_sizes=[2, 4])
    last = {"word_ids": torch.tensor([[5, 6, 7]]), "lengths": torch.tensor([3]), "word_index": torch.tensor([[2, 0]])}
    assert tagger(last).logits.shape == (1, 2, 3)


def test_count_parameters_by_hand():
    assert models.count_parameters(nn.Linear(3, 2)) == 8  # 3*2 weights + 2 biases
    # embedding 10*4 = 40; LSTM per direction 4 gates*3*(4 in + 3 hidden) + 2 biases*4*3 = 108, two = 216;
    # head Linear(2*3 -> 2) = 14; total 270
    assert models.count_parameters(models.BiLSTMStudent(10, 2, "single", emb_dim=4, hidden=3)) == 270


def test_load_model_refuses_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a kd-exam model folder"):
        models.load_model(tmp_path)


@pytest.mark.parametrize("shape", ["single", "tagging"])
def test_vocab_train_keeps_only_the_used_pieces_and_reads_the_rest_as_unk(shape, tiny, tmp_path):
    batch = bert_batch(tiny, shape, rows=[0, 1, 2])
    used = set(batch["input_ids"][:2].flatten().tolist())  # rows 0 and 1 are "the training text"
    torch.manual_seed(0)
    student = build("bert-tiny", tiny, shape, used_ids=used).eval()
    kept = student.vocab_map.kept_ids
    assert set(kept) == used | set(tiny.tokenizer.all_special_ids) and kept == sorted(kept)
    assert student.hf.config.vocab_size == len(kept) < len(tiny.tokenizer)
    assert student.word_embeddings().weight.shape[0] == len(kept)
    assert student.hf.config.pad_token_id == kept.index(tiny.tokenizer.pad_token_id)
    # a piece outside the kept set reads exactly what UNK reads
    unk, dropped = tiny.tokenizer.unk_token_id, next(i for i in range(len(tiny.tokenizer)) if i not in kept)
    one = {k: v[:1].clone() for k, v in batch.items()}
    as_unk, as_dropped = dict(one, input_ids=one["input_ids"].clone()), dict(one, input_ids=one["input_ids"].clone())
    as_unk["input_ids"][0, 1], as_dropped["input_ids"][0, 1] = unk, dropped
    with torch.no_grad():
        assert torch.equal(student(as_unk).logits, student(as_dropped).logits)
        before = student(batch).logits
    student.save_pretrained(tmp_path / "m")
    again = models.load_model(tmp_path / "m").eval()
    assert again.vocab_map == student.vocab_map
    with torch.no_grad():
        assert torch.equal(again(batch).logits, before)
    full = build("bert-tiny", tiny, shape, pieces="full")
    assert full.vocab_map is None and full.hf.config.vocab_size == len(tiny.tokenizer)
    assert models.count_parameters(student) < models.count_parameters(full)


def test_vocab_train_from_a_pretrained_folder_copies_the_kept_rows(tiny, tmp_path):
    from transformers import BertModel

    folder = models.save_random_bert(tmp_path, tiny.tokenizer, layers=2, hidden=128, heads=2, intermediate=512)
    used = [5, 17, 40]
    student = build("bert-tiny", tiny, "single", init=str(folder), used_ids=used)
    pretrained = BertModel.from_pretrained(folder).get_input_embeddings().weight
    kept = student.vocab_map.kept_ids
    assert torch.equal(student.word_embeddings().weight, pretrained[torch.tensor(kept)])
    with pytest.raises(ConfigError, match="pieces 'some' for student 'bert-tiny'"):
        build("bert-tiny", tiny, "single", pieces="some")
    with pytest.raises(ConfigError, match="needs used_ids="):
        models.build_student("bert-tiny", tiny.spec("single"), tokenizer=tiny.tokenizer)


def test_default_learning_rates_depend_on_the_init():
    tiny = params.get_student("bert-tiny")
    assert tiny.lr_for({}) == tiny.lr_for({"init": "random"}) == 1e-3
    assert tiny.lr_for({"init": "/models/bert_uncased_L-2_H-128_A-2"}) == 1e-4
    assert params.get_student("bilstm").lr_for({"init": "x"}) == 1e-3  # word students have no pretrained rate


@pytest.mark.parametrize("layers", [1, 2])
def test_bilstm_states_are_those_of_a_packed_bidirectional_lstm_and_its_weights_load(layers):
    """The student runs each direction over padded batches; a packed nn.LSTM(bidirectional=True) is the reference,
    and a model saved with one (`lstm.*` weights, as kd-exam saved BiLSTMs before) loads into it unchanged."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    reference = torch.nn.LSTM(6, 5, num_layers=layers, bidirectional=True, batch_first=True)
    model = models.BiLSTMStudent(20, 3, "tagging", emb_dim=6, hidden=5, layers=layers, dropout=0.0)
    old = {k: v for k, v in model.state_dict().items() if "lstm" not in k}
    old.update({f"lstm.{k}": v for k, v in reference.state_dict().items()})
    model.load_state_dict(old)  # strict: every packed weight found its place, none is missing
    model.eval()
    lengths = torch.tensor([7, 3, 1, 5])
    x = torch.randn(4, 7, 6)
    with torch.no_grad():
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        want = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=7)[0]
        got = model.encode(x, lengths)
    real = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    assert torch.allclose(got[real], want[real], atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The pruned student, the case feature and word dropout

@pytest.mark.parametrize("shape", ["single", "aspect", "tagging"])
def test_pruned_student_is_the_teacher_cut_to_its_first_layers(shape, tiny):
    teacher = models.load_model(tiny.teacher_dir(shape)).eval()
    batch = bert_batch(tiny, shape)
    whole = build("pruned", tiny, shape, layers=2, pieces="full").eval()
    with torch.no_grad():
        assert torch.allclose(whole(batch).logits, teacher(batch).logits, atol=1e-6)  # all layers: the teacher
    cut = build("pruned", tiny, shape, layers=1, pieces="full").eval()
    assert cut.hf.config.num_hidden_layers == 1 and len(cut.hf.base_model.encoder.layer) == 1
    first = dict(teacher.hf.base_model.encoder.layer[0].named_parameters())
    assert all(torch.equal(p, first[n]) for n, p in cut.hf.base_model.encoder.layer[0].named_parameters())
    assert torch.equal(cut.hf.classifier.weight, teacher.hf.classifier.weight)  # the fine-tuned head is kept
    assert cut.pooling == teacher.pooling


def test_pruned_student_keeps_only_the_pieces_the_data_uses(tiny, tmp_path):
    batch = bert_batch(tiny, "single")
    used = sorted(set(batch["input_ids"].flatten().tolist()))
    full = build("pruned", tiny, "single", pieces="full").eval()
    kept = build("pruned", tiny, "single", used_ids=used).eval()
    specials = set(tiny.tokenizer.all_special_ids)
    assert kept.vocab_map.kept_ids == sorted(set(used) | specials)
    assert kept.word_embeddings().num_embeddings == len(kept.vocab_map.kept_ids) < len(tiny.tokenizer)
    with torch.no_grad():
        assert torch.allclose(kept(batch).logits, full(batch).logits, atol=1e-6)  # same rows for the same pieces
        reloaded = models.load_model(kept.save_pretrained(tmp_path / "pruned")).eval()
        assert torch.allclose(reloaded(batch).logits, kept(batch).logits, atol=1e-6)
    assert reloaded.hf.config.num_hidden_layers == 1


def test_pruned_student_errors(tiny):
    with pytest.raises(ConfigError, match="layers 3 for the pruned student: the teacher has 2 layers"):
        build("pruned", tiny, "single", layers=3)
    with pytest.raises(ConfigError, match="needs teacher_model_dir"):
        models.build_student("pruned", tiny.spec("single"), tokenizer=tiny.tokenizer, used_ids=[1, 2])


@pytest.mark.parametrize("word, case", [("makan", "lower"), ("Jakarta", "title"), ("BCA", "upper"), ("A", "title"),
                                        ("iPhone", "mixed"), ("2019", "number"), ("12,5", "number"), (",", "other"),
                                        ("COVID-19", "upper"), (data.SEP, "other")])
def test_case_classes(word, case):
    assert data.CASES[data.case_class(word)] == case


@pytest.mark.parametrize("student", ["bilstm", "cnn"])
def test_case_feature_lets_a_tagger_see_capitals(student, tiny, tmp_path):
    spec = tiny.spec("tagging")
    words = [["budi", "pergi", "ke", "jakarta"], ["Budi", "pergi", "ke", "Jakarta"]]
    vocab = data.Vocab.build(words)
    ds = [{"tokens": w, "tags": [0] * 4} for w in words]
    enc = data.encode_for_words({"tokens": [d["tokens"] for d in ds], "tags": [d["tags"] for d in ds]}, vocab, spec)
    assert enc["word_ids"][0] == enc["word_ids"][1] and enc["case_ids"][0] != enc["case_ids"][1]
    batch = {"word_ids": torch.tensor(enc["word_ids"]), "case_ids": torch.tensor(enc["case_ids"]),
             "lengths": torch.tensor([4, 4]), "word_index": torch.tensor(enc["word_index"])}
    torch.manual_seed(0)
    plain = models.build_student(student, spec, vocab=vocab, emb_dim=8).eval()
    cased = models.build_student(student, spec, vocab=vocab, emb_dim=8, case_dim=4).eval()
    assert plain.input_keys == ("word_ids", "lengths") and cased.input_keys == ("word_ids", "lengths", "case_ids")
    with torch.no_grad():
        assert torch.equal(plain(batch).logits[0], plain(batch).logits[1])  # lower-cased: the same words
        assert not torch.allclose(cased(batch).logits[0], cased(batch).logits[1])
        reloaded = models.load_model(cased.save_pretrained(tmp_path / student)).eval()
        assert torch.equal(reloaded(batch).logits, cased(batch).logits)
    with pytest.raises(ConfigError, match="case_dim must be 0"):
        models.build_student(student, spec, vocab=vocab, case_dim=-1)


def test_word_dropout_trains_unk_on_rare_words_only_while_training(tiny):
    from kdlib import distill, models

    texts = [["a", "a", "a", "b"], ["a", "a", "a", "a", "c"]]
    vocab = data.Vocab.build(texts)
    probabilities = distill.word_dropout_probabilities(vocab, texts, 0.25)
    ids = {w: vocab.encode([w])[0] for w in ("a", "b", "c")}
    assert probabilities[ids["a"]].item() == pytest.approx(0.25 / 7.25)  # seen 7 times
    assert probabilities[ids["b"]].item() == pytest.approx(0.25 / 1.25)  # seen once: 20%
    assert probabilities[[vocab.pad_id, vocab.unk_id]].tolist() == [0.0, 0.0]
    assert distill.word_dropout_probabilities(vocab, texts, 0.0) is None
    model = models.build_student("cnn", tiny.spec("single"), vocab=vocab, emb_dim=4)
    model.set_word_dropout(torch.where(torch.arange(len(vocab)) == ids["b"], 1.0, 0.0))  # b always drops
    batch = {"word_ids": torch.tensor([[ids["a"], ids["b"], ids["c"]]]), "lengths": torch.tensor([3])}
    unk = model.embedding.weight[vocab.unk_id]
    model.train()
    x = model.embed(batch)[0]
    assert torch.equal(x[1], unk) and torch.equal(x[0], model.embedding.weight[ids["a"]])
    model.eval()
    assert torch.equal(model.embed(batch)[0][1], model.embedding.weight[ids["b"]])  # never at inference
    assert "drop_probability" not in model.state_dict()  # not saved with the model
