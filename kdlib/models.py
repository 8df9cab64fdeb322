"""The teacher and the five students, all behind one contract: `model(batch).logits` at the labelled-unit level.

| task shape    | logits    | read from                                                                   |
|---------------|-----------|-----------------------------------------------------------------------------|
| single, pair  | (B, C)    | the whole input                                                             |
| aspect        | (B, A, C) | one head of A*C outputs, reshaped                                           |
| tagging, qa   | (B, W, C) | per-position logits gathered at `batch["word_index"]` (B, W), -1 = no word |

`word_index` points into the model's own input: a word's first sub-word for BERT models, the word itself for
word-level students, the passage words after `question <sep>` for QA. Padding entries (-1) are read at position
0, so they are finite; the loss and the metric mask them. The training loop, the teacher-logit cache and the
metrics rely only on this contract, never on the model class.

Batches: BERT models read `input_ids`, `attention_mask` and optional `token_type_ids`; word-level students read
`word_ids` (B, T) padded with 0 and `lengths` (B,). Every model ignores the keys it does not use (labels,
teacher_logits, ...).
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlib import rundir
from kdlib.data import CASES, DatasetSpec, Vocab, get_spec
from kdlib.errors import ConfigError, unknown_name
from kdlib.params import PAIR_ENCODINGS, POOLINGS, PRUNED, get_student

BERT_INFO = "kdexam.json"  # next to a Hugging Face folder: which dataset head the wrapper carries
MODEL_KEY = "kdexam_model"  # in a word student's config.json: which class to rebuild


@dataclass
class ModelOutput:
    """What every model returns; logits are at the labelled-unit level (see the module docstring)."""

    logits: Tensor


def gather_words(token_logits: Tensor, word_index: Tensor) -> Tensor:
    """Word-level logits (B, W, C) read from per-position logits (B, T, C) at word_index (B, W); -1 reads position 0."""
    index = word_index.clamp(min=0).unsqueeze(-1).expand(-1, -1, token_logits.shape[-1])
    return token_logits.gather(1, index)


def _num_aspects(spec: DatasetSpec) -> int:
    return len(spec.aspects) if spec.shape == "aspect" else 1


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or frozen (frozen embeddings still cost storage and RAM)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# BERT: the teacher and the BERT students, as unmodified Hugging Face models plus the task reshaping.

def _hf_auto_class(spec: DatasetSpec):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if spec.is_tagging else AutoModelForSequenceClassification


def _label_maps(spec: DatasetSpec) -> dict[str, dict]:
    """id2label/label2id of the HF head; aspect heads name each output `aspect:label`."""
    names = ([f"{a}:{label}" for a in spec.aspects for label in spec.labels] if spec.shape == "aspect"
             else list(spec.labels))
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


@dataclass(frozen=True)
class VocabMap:
    """The teacher-tokenizer pieces a BERT student keeps: embedding row i is piece `kept_ids[i]`; others read UNK.

    The teacher's tokenizer may carry far more pieces than a task uses (multilingual-e5: 250,037, of which SmSA's
    training text uses ~17,000). A student that keeps only the pieces of its training text has the same inputs
    and outputs for them but a fraction of the embedding, which dominates a miniature's size and training step.
    """

    kept_ids: list[int]
    source_size: int  # the tokenizer's size: ids the map accepts
    unk_id: int  # a tokenizer id that is kept; every dropped piece reads its row

    @classmethod
    def from_ids(cls, used: Iterable[int], tokenizer) -> VocabMap:
        """Keep every id in `used` plus the tokenizer's special pieces, in id order."""
        if tokenizer.unk_token_id is None:
            raise ConfigError("pieces: train needs a tokenizer with an unknown-piece token; use pieces: full.")
        kept = sorted({int(i) for i in used} | set(tokenizer.all_special_ids))
        return cls(kept_ids=kept, source_size=len(tokenizer), unk_id=int(tokenizer.unk_token_id))

    def row(self, token_id: int) -> int:
        return self.kept_ids.index(token_id)

    def lookup(self) -> Tensor:
        """(source_size,) int64: the embedding row of every tokenizer id."""
        table = torch.full((self.source_size,), self.row(self.unk_id), dtype=torch.long)
        table[torch.tensor(self.kept_ids, dtype=torch.long)] = torch.arange(len(self.kept_ids))
        return table




def _output_layer(hf_model: nn.Module, num_labels: int) -> nn.Linear:
    """The classification head's last linear layer: the one that gives the `num_labels` outputs."""
    found = [m for m in hf_model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise ConfigError(f"{type(hf_model).__name__}: no linear output layer of {num_labels} outputs to match "
                          "labels on; set fine_tune: true to train a new head.")
    return found[-1]


def _has_linear_head(hf_model: nn.Module) -> bool:
    """BERT-family sequence classifiers: `dropout` then one `classifier` Linear over the pooled vector."""
    return isinstance(getattr(hf_model, "classifier", None), nn.Linear) and hasattr(hf_model, "dropout")


class BertTaskModel(nn.Module):
    """A Hugging Face sequence- or token-classification model whose logits follow the unit-level contract.

    Single/pair/aspect use `AutoModelForSequenceClassification` (aspect: A*C outputs reshaped to (B, A, C));
    tagging/qa use `AutoModelForTokenClassification`, gathered at `word_index`. `self.hf` is the HF model as is.

    `pooling` says what the sequence head reads: "cls" is Hugging Face's own head ([CLS] through BERT's pooler),
    "mean" the encoder's last hidden states averaged over the attention mask, then the head's dropout and linear
    layer (the pooler is bypassed). Encoders pretrained for mean pooling (e5, sentence encoders) ship no pooler
    weights, so "cls" would start them from a random dense+tanh layer. Tagging heads read every position; for
    them pooling is recorded but has no effect.
    """

    def __init__(self, hf_model: nn.Module, spec: DatasetSpec, vocab_map: VocabMap | None = None,
                 pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"pooling {pooling!r}: use cls (the encoder's pooler) or mean (average of the last "
                              "hidden states); auto is resolved when the encoder is loaded.")
        if pooling == "mean" and not spec.is_tagging and not _has_linear_head(hf_model):
            raise ConfigError(f"pooling: mean needs a BERT-style head (dropout + one linear classifier); "
                              f"{type(hf_model).__name__} has another one: use pooling: cls.")
        expected = spec.num_labels * _num_aspects(spec)
        if hf_model.config.num_labels != expected:
            raise ConfigError(f"the model's head has {hf_model.config.num_labels} outputs but {spec.key} needs "
                              f"{expected}; load it with BertTaskModel.from_encoder(..., spec) to get a new head.")
        if vocab_map is not None and len(vocab_map.kept_ids) != hf_model.config.vocab_size:
            raise ConfigError(f"the vocabulary map keeps {len(vocab_map.kept_ids)} pieces but the model's embedding "
                              f"has {hf_model.config.vocab_size} rows.")
        self.hf = hf_model
        self.spec = spec
        self.vocab_map = vocab_map
        self.pooling = pooling
        if vocab_map is not None:  # tokenizer id -> embedding row; a buffer, so it follows .to() and ONNX export
            self.register_buffer("id_map", vocab_map.lookup(), persistent=False)

    @classmethod
    def from_encoder(cls, name_or_path: str | os.PathLike, spec: DatasetSpec, *, pooling: str = "auto",
                     **hf_kwargs) -> BertTaskModel:
        """A pretrained encoder (hub id or local folder) with a new task head; missing pooler/head are initialised.

        pooling "auto" is "mean" when the checkpoint has no pooler weights (they would start random) and "cls"
        when it has them.
        """
        if pooling not in POOLINGS:
            raise unknown_name("pooling", str(pooling), POOLINGS)
        if _offline():
            hf_kwargs.setdefault("local_files_only", True)  # HF_HUB_OFFLINE=1 means no network call at all
        hf, info = _hf_auto_class(spec).from_pretrained(str(name_or_path), output_loading_info=True,
                                                         **_label_maps(spec), **hf_kwargs)
        if pooling == "auto":
            no_pooler = any(".pooler." in f".{key}" for key in info.get("missing_keys", []))
            pooling = "mean" if no_pooler and _has_linear_head(hf) else "cls"
        return cls(hf, spec, pooling=pooling)

    @classmethod
    def from_finetuned(cls, name_or_path: str | os.PathLike, spec: DatasetSpec) -> BertTaskModel:
        """A model already fine-tuned on this task (a Hugging Face folder or hub id), as it is: its head's outputs
        are reordered to the dataset's labels, matched by name through its config's id2label."""
        kwargs = {"local_files_only": True} if _offline() else {}
        hf = _hf_auto_class(spec).from_pretrained(str(name_or_path), **kwargs)
        theirs = [str(hf.config.id2label[i]) for i in range(hf.config.num_labels)]
        ours = list(_label_maps(spec)["id2label"].values())
        missing, extra = [n for n in ours if n not in theirs], [n for n in theirs if n not in ours]
        if missing or extra:
            raise ConfigError(f"{name_or_path}: its labels do not match {spec.key}'s: "
                              + "; ".join(x for x in (f"{spec.key} has {', '.join(missing)}, which the model lacks"
                                                      if missing else "",
                                                      f"the model has {', '.join(extra)}, which {spec.key} lacks"
                                                      if extra else "") if x)
                              + f" (the model's id2label: {', '.join(theirs)}). Name the dataset's labels as the "
                              "model's (labels: in the params file), or set fine_tune: true to train a new head.")
        head = _output_layer(hf, len(theirs))
        order = torch.tensor([theirs.index(n) for n in ours])
        with torch.no_grad():
            head.weight.copy_(head.weight[order])
            if head.bias is not None:
                head.bias.copy_(head.bias[order])
        for key, value in _label_maps(spec).items():
            setattr(hf.config, key, value)
        info_path = Path(str(name_or_path)) / BERT_INFO  # one kd-exam saved keeps its pooling
        pooling = rundir.read_json(info_path).get("pooling", "cls") if info_path.is_file() else "cls"
        return cls(hf, spec, pooling=pooling)

    @classmethod
    def from_config(cls, config, spec: DatasetSpec) -> BertTaskModel:
        """A randomly initialised model of `config` (a BertConfig) with the head of `spec`."""
        config = copy.deepcopy(config)
        for key, value in _label_maps(spec).items():
            setattr(config, key, value)
        return cls(_hf_auto_class(spec).from_config(config), spec)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> BertTaskModel:
        """Reload a folder written by `save_pretrained`."""
        model_dir = Path(model_dir)
        info = rundir.read_json(model_dir / BERT_INFO, run_dir=model_dir.parent)
        spec = get_spec(info.get("spec") or info["dataset"])  # "spec": your own dataset's definition
        hf = _hf_auto_class(spec).from_pretrained(str(model_dir), local_files_only=True)
        vocab_map = VocabMap(**info["vocab_map"]) if info.get("vocab_map") else None
        return cls(hf, spec, vocab_map, pooling=info.get("pooling", "cls"))

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """The HF folder (config.json, model.safetensors) plus kdexam.json naming the dataset head."""
        out_dir = Path(out_dir)
        self.hf.save_pretrained(out_dir)
        info = {MODEL_KEY: "bert", "dataset": self.spec.key, "shape": self.spec.shape,
                "num_labels": self.spec.num_labels, "num_aspects": _num_aspects(self.spec),
                "vocab_map": asdict(self.vocab_map) if self.vocab_map is not None else None,
                "pooling": self.pooling}
        if self.spec.source is not None:  # your own dataset is in no registry: the model carries its definition
            info["spec"] = self.spec.source
        (out_dir / BERT_INFO).write_text(json.dumps(info, indent=2))
        return out_dir

    def word_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if self.vocab_map is not None:
            inputs["input_ids"] = self.id_map[inputs["input_ids"]]
        if self.pooling == "mean" and not self.spec.is_tagging:
            logits = self._mean_pooled_logits(inputs)
        else:
            logits = self.hf(**inputs).logits
        if self.spec.is_tagging:
            return ModelOutput(gather_words(logits, batch["word_index"]))
        if self.spec.shape == "aspect":
            logits = logits.view(logits.shape[0], _num_aspects(self.spec), self.spec.num_labels)
        return ModelOutput(logits)


    def _mean_pooled_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        states = self.hf.base_model(**inputs).last_hidden_state  # (B, T, H)
        mask = inputs.get("attention_mask")
        mask = torch.ones(states.shape[:2], device=states.device) if mask is None else mask
        mask = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.hf.classifier(self.hf.dropout(pooled))


@dataclass(frozen=True)
class BertSize:
    layers: int
    hidden: int
    heads: int


# Google's BERT miniatures (Turc et al., 2019), the shapes our BERT students take.
SIZES: dict[str, BertSize] = {
    "bert-tiny": BertSize(layers=2, hidden=128, heads=2),
    "bert-mini": BertSize(layers=4, hidden=256, heads=4),
    "bert-small": BertSize(layers=4, hidden=512, heads=8),
}


def bert_student_config(size: str, tokenizer, *, dropout: float = 0.1, **overrides):
    """The BertConfig of a BERT student: a miniature shape over the teacher's tokenizer (its vocab and pad id).

    `overrides` are BertConfig fields (e.g. max_position_embeddings); unknown names are a ConfigError.
    """
    from transformers import BertConfig

    if size not in SIZES:
        raise unknown_name("BERT student size", size, SIZES)
    unknown = sorted(set(overrides) - set(BertConfig().to_dict()))
    if unknown:
        raise ConfigError(f"unknown BertConfig field(s) {', '.join(unknown)} for {size}.")
    shape = SIZES[size]
    values = dict(vocab_size=len(tokenizer), hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                  num_attention_heads=shape.heads, intermediate_size=4 * shape.hidden, max_position_embeddings=512,
                  type_vocab_size=2, pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=dropout,
                  attention_probs_dropout_prob=dropout)
    return BertConfig(**{**values, **overrides})


def _check_pretrained_fits(init: str, config, size: str) -> None:
    """A pretrained student must have the miniature's shape and the teacher's vocabulary, or we cannot use it."""
    from transformers import AutoConfig

    try:
        pretrained = AutoConfig.from_pretrained(init, local_files_only=_offline())
    except (OSError, ValueError) as e:
        raise ConfigError(f"init {init!r} for {size} is neither 'random' nor a folder (or hub id) holding a BERT "
                          f"config: {e}") from None
    wrong = [f"{name} is {getattr(pretrained, name)} there but {getattr(config, name)} for {size}"
             for name in ("hidden_size", "num_hidden_layers", "vocab_size") if getattr(pretrained, name, None)
             != getattr(config, name)]
    if wrong:
        raise ConfigError(f"pretrained student {init} does not fit {size}: {'; '.join(wrong)}. Use init: random, "
                          f"or a checkpoint with L={config.num_hidden_layers}, H={config.hidden_size} and the "
                          f"teacher's tokenizer ({config.vocab_size} pieces).")


# ----------------------------------------------------------------------------------------------------------------
# Word-level students. Both read word ids; pair texts and QA question/passage arrive joined by a `<sep>` word
# (kdlib.data.example_words), so the same input serves every shape. A pair student (pair: siamese) splits the ids at
# `<sep>` inside its forward, so saving, ONNX export and prediction see the same inputs as for any other shape.

SEP_ID = 2  # kdlib.data.Vocab's <sep>


def split_pair(batch: Mapping[str, Tensor], pad_id: int) -> dict[str, Tensor]:
    """A batch of joined pairs (a <sep> b) -> a batch of 2B single texts: the B first sentences, then the B second
    ones, each left-aligned with its own length and padded to the joined width. Data-dependent positions are
    tensor ops (no Python int from a tensor), so a traced or exported graph splits any pair."""
    word_ids, lengths = batch["word_ids"], batch["lengths"]
    width = word_ids.shape[1]
    steps = torch.arange(width, device=word_ids.device).unsqueeze(0)
    real = steps < lengths.unsqueeze(1)
    sep = (word_ids == SEP_ID) & real
    # the first <sep>; none (a first sentence cut at max_words): everything is the first sentence
    first_sep = torch.where(sep.any(dim=1), sep.to(torch.int64).argmax(dim=1), lengths)
    len_a, len_b = first_sep, (lengths - first_sep - 1).clamp(min=0)
    index_b = (first_sep.unsqueeze(1) + 1 + steps).clamp(max=width - 1)
    out = {"lengths": torch.cat([len_a, len_b])}
    for key, pad in (("word_ids", pad_id), ("case_ids", 0)):
        if key in batch:
            ids = batch[key]
            a = ids.masked_fill(steps >= len_a.unsqueeze(1), pad)
            b = ids.gather(1, index_b.expand(ids.shape[0], -1)).masked_fill(steps >= len_b.unsqueeze(1), pad)
            out[key] = torch.cat([a, b])
    return out


def pair_features(pooled: Tensor) -> Tensor:
    """(2B, D) sentence vectors (split_pair's order) -> (B, 4D) [a, b, a*b, |a-b|] (Tang et al. 2019)."""
    a, b = pooled.chunk(2)
    return torch.cat([a, b, a * b, (a - b).abs()], dim=-1)

def _word_embedding(vocab_size: int, emb_dim: int, pad_id: int, embeddings: Tensor | None,
                    freeze: bool) -> nn.Embedding:
    layer = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
    if embeddings is not None:
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        if tuple(embeddings.shape) != (vocab_size, emb_dim):
            raise ConfigError(f"embeddings have shape {tuple(embeddings.shape)} but the student needs "
                              f"({vocab_size}, {emb_dim}) = (vocabulary size, emb_dim); build them for this vocab.")
        with torch.no_grad():
            layer.weight.copy_(embeddings)
    layer.weight.requires_grad_(not freeze)
    return layer


def _real_positions(lengths: Tensor, width: int) -> Tensor:
    """(B, width) bool: True where a position holds a word, False on padding."""
    return torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class WordStudent(nn.Module):
    """What the word-level students share: the input layer, word dropout, saving and loading.

    The input of a word is its embedding, followed, when `case_dim` > 0, by an embedding of its casing class
    (`batch["case_ids"]`, kdlib.data.CASES): the vocabulary is lower-cased, so without it a tagger cannot see the
    capital letter that marks a name. `self.config` holds the constructor arguments.
    """

    name = ""
    config: dict[str, Any]

    def _input_layer(self, vocab_size: int, emb_dim: int, pad_id: int, embeddings: Tensor | None, freeze: bool,
                     case_dim: int) -> int:
        """Build the word (and case) embeddings; returns the width of a word's input vector."""
        if case_dim < 0:
            raise ConfigError(f"case_dim must be 0 (no case feature) or a positive width, got {case_dim}.")
        self.embedding = _word_embedding(vocab_size, emb_dim, pad_id, embeddings, freeze)
        self.case_embedding = nn.Embedding(len(CASES), case_dim, padding_idx=0) if case_dim else None
        self.unk_id = 1  # kdlib.data.Vocab's UNK
        return emb_dim + case_dim

    def set_word_dropout(self, probabilities: Tensor | None) -> None:
        """While training, word id i reads UNK with probability `probabilities[i]` (None: never), so UNK's vector
        is trained on rare words and unseen test words do not read an untrained vector. Not saved with the model."""
        self.register_buffer("drop_probability", probabilities, persistent=False)

    def embed(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, T) word ids (and case ids) -> (B, T, E) inputs."""
        word_ids = batch["word_ids"]
        drop = getattr(self, "drop_probability", None)
        if self.training and drop is not None:
            word_ids = word_ids.masked_fill(torch.rand(word_ids.shape, device=word_ids.device) < drop[word_ids],
                                            self.unk_id)
        x = self.embedding(word_ids)
        if self.case_embedding is not None:
            x = torch.cat([x, self.case_embedding(batch["case_ids"])], dim=-1)
        return x

    @property
    def input_keys(self) -> tuple[str, ...]:
        """The batch keys the model reads (ONNX input order); tagging adds word_index."""
        return ("word_ids", "lengths", *(("case_ids",) if self.case_embedding is not None else ()))

    def save_pretrained(self, out_dir: str | os.PathLike, vocab: Vocab | None = None) -> Path:
        """config.json (constructor arguments; the embeddings live in the weights) + model.safetensors."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps({MODEL_KEY: self.name, **self.config}, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out_dir / "model.safetensors")
        if vocab is not None:
            vocab.save(out_dir / "vocab.json")
        return out_dir

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> WordStudent:
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        config = rundir.read_json(model_dir / "config.json", run_dir=model_dir.parent)
        config.pop(MODEL_KEY, None)
        model = cls(**config)
        model.load_state_dict(load_file(model_dir / "model.safetensors"))
        return model

    def _pair_setting(self, pair: str) -> int:
        """Check `pair`; returns how many sentence vectors the head reads (4 for a siamese pair student, else 1)."""
        if pair not in PAIR_ENCODINGS:
            raise ConfigError(f"pair must be one of {', '.join(PAIR_ENCODINGS)}, got {pair!r}.")
        self.siamese = self.shape == "pair" and pair == "siamese"
        return 4 if self.siamese else 1

    def classify(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Sequence-level logits: the pooled text, or a siamese pair's features, through dropout and the head."""
        if self.siamese:
            features = pair_features(self.pool(split_pair(batch, self.config["pad_id"])))
        else:
            features = self.pool(batch)
        return self._unit_logits(self.head(self.dropout(features)))

    def pool(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, D): one vector per text."""
        raise NotImplementedError

    def _unit_logits(self, logits: Tensor) -> Tensor:
        if self.shape == "aspect":
            return logits.view(logits.shape[0], self.num_aspects, self.num_labels)
        return logits


class BiLSTMStudent(WordStudent):
    """Tang et al. (2019)'s BiLSTM student: embedding -> BiLSTM -> max-pool over words -> dropout -> linear.

    Classification max-pools the BiLSTM states over the real words (padding is -inf before the max, so a padded
    example scores exactly as it does alone); the head has C outputs, or A*C for aspect tasks. Tagging and QA put
    a linear head on every position and read it at `word_index`.

    Each direction is its own unidirectional LSTM over padded batches, not one bidirectional LSTM over a
    PackedSequence: the forward one reads the words then the padding, so padding never reaches a word's state; the
    backward one reads every example reversed within its length, so it too meets the words first. The states are
    those of the packed BiLSTM, but PyTorch's packed CPU path runs the cell time step by time step at a shrinking
    batch size and took twice as long a step (benchmarks/bench_bilstm.py). Saved packed BiLSTMs (`lstm.*` weights)
    load into this one.
    """

    name = "bilstm"

    def __init__(self, vocab_size: int, num_labels: int, shape: str, num_aspects: int = 1, emb_dim: int = 300,
                 hidden: int = 300, layers: int = 1, dropout: float = 0.2, pad_id: int = 0,
                 embeddings: Tensor | None = None, freeze_embeddings: bool = False, case_dim: int = 0,
                 pair: str = "concat"):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, num_labels=num_labels, shape=shape, num_aspects=num_aspects,
                           emb_dim=emb_dim, hidden=hidden, layers=layers, dropout=dropout, pad_id=pad_id,
                           freeze_embeddings=freeze_embeddings, case_dim=case_dim, pair=pair)
        self.shape, self.num_labels, self.num_aspects = shape, num_labels, num_aspects
        vectors = self._pair_setting(pair)
        width = self._input_layer(vocab_size, emb_dim, pad_id, embeddings, freeze_embeddings, case_dim)
        # layer l of each direction reads both directions of layer l-1, as in nn.LSTM(bidirectional=True)
        self.forward_lstm = nn.ModuleList(nn.LSTM(width if i == 0 else 2 * hidden, hidden, batch_first=True)
                                          for i in range(layers))
        self.backward_lstm = nn.ModuleList(nn.LSTM(width if i == 0 else 2 * hidden, hidden, batch_first=True)
                                           for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        tagging = shape in ("tagging", "qa")
        self.head = nn.Linear(2 * hidden * vectors, num_labels if tagging else num_labels * num_aspects)
        self._register_load_state_dict_pre_hook(_from_packed_bilstm)

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, E) embeddings of words then padding -> (B, T, 2H) states; padding positions hold garbage."""
        width = x.shape[1]
        steps = torch.arange(width, device=x.device).unsqueeze(0)
        # position t of the reversed view reads word len-1-t; padding stays where it is, after the words
        flip = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
        flip = flip.unsqueeze(-1)
        for i, (fwd, bwd) in enumerate(zip(self.forward_lstm, self.backward_lstm)):
            if i:  # nn.LSTM's inter-layer dropout
                x = F.dropout(x, self.config["dropout"], self.training)
            ahead = fwd(x)[0]
            back = bwd(x.gather(1, flip.expand(-1, -1, x.shape[-1])))[0]
            x = torch.cat([ahead, back.gather(1, flip.expand(-1, -1, back.shape[-1]))], dim=-1)
        return x

    def pool(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, 2H): the BiLSTM states max-pooled over the real words."""
        word_ids, lengths = batch["word_ids"], batch["lengths"].clamp(min=1)
        states = self.encode(self.embed(batch), lengths)  # (B, T, 2H)
        real = _real_positions(lengths, word_ids.shape[1]).unsqueeze(-1)
        return states.masked_fill(~real, float("-inf")).max(dim=1).values

    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        if self.shape in ("tagging", "qa"):
            states = self.encode(self.embed(batch), batch["lengths"].clamp(min=1))  # (B, T, 2H)
            return ModelOutput(gather_words(self.head(self.dropout(states)), batch["word_index"]))
        return ModelOutput(self.classify(batch))


def _from_packed_bilstm(state_dict: dict, prefix: str, *args) -> None:
    """Rename the weights of a model saved with one nn.LSTM(bidirectional=True) (`lstm.weight_ih_l0_reverse`, ...)
    to this class's two unidirectional stacks (`backward_lstm.0.weight_ih_l0`, ...)."""
    for key in [k for k in state_dict if k.startswith(prefix + "lstm.")]:
        name = key[len(prefix + "lstm."):]  # weight_ih_l0 or weight_ih_l0_reverse
        reverse = name.endswith("_reverse")
        base, layer = name.removesuffix("_reverse").rsplit("_l", 1)
        direction = "backward_lstm" if reverse else "forward_lstm"
        state_dict[f"{prefix}{direction}.{layer}.{base}_l0"] = state_dict.pop(key)


class CNNStudent(WordStudent):
    """Kim (2014)'s TextCNN student, and its same-length variant for tagging.

    Classification: one conv1d per kernel size over the word embeddings, ReLU, max over the windows that lie in
    the real words (a sequence shorter than the largest kernel is zero-padded to it, so it still has one window),
    concatenated -> dropout -> linear (C, or A*C for aspect tasks). Tagging and QA: each convolution is padded to
    keep the length ((k-1)//2 zeros on the left, k//2 on the right, so even kernels work too), the feature maps
    are concatenated per position -> dropout -> per-position linear, read at `word_index`. Embeddings of padding
    positions are zeroed, so batch padding never changes an example's output.
    """

    name = "cnn"

    def __init__(self, vocab_size: int, num_labels: int, shape: str, num_aspects: int = 1, emb_dim: int = 300,
                 filters: int = 100, kernel_sizes: tuple[int, ...] = (3, 4, 5), dropout: float = 0.2,
                 pad_id: int = 0, embeddings: Tensor | None = None, freeze_embeddings: bool = False,
                 case_dim: int = 0, pair: str = "concat"):
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)  # JSON and YAML hand back lists
        if not kernel_sizes or min(kernel_sizes) < 1:
            raise ConfigError(f"kernel_sizes must be one or more positive widths, got {kernel_sizes}.")
        self.config = dict(vocab_size=vocab_size, num_labels=num_labels, shape=shape, num_aspects=num_aspects,
                           emb_dim=emb_dim, filters=filters, kernel_sizes=list(kernel_sizes), dropout=dropout,
                           pad_id=pad_id, freeze_embeddings=freeze_embeddings, case_dim=case_dim, pair=pair)
        self.shape, self.num_labels, self.num_aspects = shape, num_labels, num_aspects
        vectors = self._pair_setting(pair)
        self.kernel_sizes = kernel_sizes
        width = self._input_layer(vocab_size, emb_dim, pad_id, embeddings, freeze_embeddings, case_dim)
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        tagging = shape in ("tagging", "qa")
        features = filters * len(kernel_sizes)
        self.head = nn.Linear(features * (1 if tagging else vectors),
                              num_labels if tagging else num_labels * num_aspects)

    def _inputs(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(B, E, T) embeddings with padding zeroed, and the lengths (at least 1)."""
        lengths = batch["lengths"].clamp(min=1)
        real = _real_positions(lengths, batch["word_ids"].shape[1])
        return (self.embed(batch) * real.unsqueeze(-1)).transpose(1, 2), lengths

    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        if self.shape in ("tagging", "qa"):
            x, _ = self._inputs(batch)
            maps = [F.relu(conv(F.pad(x, ((k - 1) // 2, k // 2)))) for conv, k in zip(self.convs, self.kernel_sizes)]
            per_word = torch.cat(maps, dim=1).transpose(1, 2)  # (B, T, filters * n_kernels)
            return ModelOutput(gather_words(self.head(self.dropout(per_word)), batch["word_index"]))
        return ModelOutput(self.classify(batch))

    def pool(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, filters * n_kernels): each feature map max-pooled over the windows inside the words."""
        x, lengths = self._inputs(batch)
        width = x.shape[-1]
        x = F.pad(x, (0, max(0, max(self.kernel_sizes) - width)))
        pooled = []
        for conv, k in zip(self.convs, self.kernel_sizes):
            h = F.relu(conv(x))  # (B, filters, windows)
            # windows wholly inside the words; a sequence shorter than k keeps its first (zero-padded) window
            inside = _real_positions((lengths - k + 1).clamp(min=1), h.shape[-1]).unsqueeze(1)
            pooled.append(h.masked_fill(~inside, float("-inf")).max(dim=-1).values)
        return torch.cat(pooled, dim=1)


_WORD_CLASSES: dict[str, type[WordStudent]] = {"bilstm": BiLSTMStudent, "cnn": CNNStudent}


# ----------------------------------------------------------------------------------------------------------------
# The student registry and factory.

# The registry (names, what each student reads, default options and rates) is kdlib.params.STUDENTS.


def prune_layers(model: BertTaskModel, layers: int) -> BertTaskModel:
    """A copy of a BERT model that keeps its embeddings, its first `layers` encoder layers and its task head."""
    hf = copy.deepcopy(model.hf)
    encoder = hf.base_model.encoder
    if not 1 <= layers <= len(encoder.layer):
        raise ConfigError(f"layers {layers} for the pruned student: the teacher has {len(encoder.layer)} layers, "
                          f"keep 1 to {len(encoder.layer)}.")
    encoder.layer = nn.ModuleList(list(encoder.layer)[:layers])
    hf.config.num_hidden_layers = layers
    if getattr(hf.config, "layer_types", None):  # some configs list a type per layer
        hf.config.layer_types = hf.config.layer_types[:layers]
    return BertTaskModel(hf, model.spec, model.vocab_map, pooling=model.pooling)


def _keep_pieces(model: BertTaskModel, vocab_map: VocabMap, tokenizer) -> BertTaskModel:
    """The model with embedding rows for the vocabulary map's pieces only (copied from its full embedding)."""
    full = model.hf.get_input_embeddings()
    rows = nn.Embedding(len(vocab_map.kept_ids), full.embedding_dim, padding_idx=vocab_map.row(tokenizer.pad_token_id))
    rows.weight.data.copy_(full.weight.data[torch.tensor(vocab_map.kept_ids)])
    rows.weight.requires_grad_(True)
    model.hf.set_input_embeddings(rows)
    model.hf.config.vocab_size, model.hf.config.pad_token_id = len(vocab_map.kept_ids), rows.padding_idx
    return BertTaskModel(model.hf, model.spec, vocab_map, pooling=model.pooling)


def build_student(name: str, spec: DatasetSpec, *, vocab: Vocab | None = None, tokenizer=None,
                  used_ids: Iterable[int] | None = None, teacher_model_dir: str | os.PathLike | None = None,
                  **overrides) -> nn.Module:
    """A fresh student for the dataset `spec`; `overrides` replace entries of its StudentSpec.defaults.

    Word students need `vocab`; an `embeddings` tensor (vocab size x dim) sets emb_dim unless it is given.
    BERT students need the teacher's `tokenizer`; `init` is "random" or a pretrained miniature of the same shape.
    Their `pieces` is "train" (default: an embedding row only for the pieces in `used_ids`, the training text's
    sub-word ids, plus special pieces; see VocabMap) or "full" (a row for every piece of the tokenizer).
    `pruned` is the fine-tuned teacher in `teacher_model_dir` cut to its first `layers` layers (prune_layers),
    with the same `pieces` choice.
    """
    student = get_student(name)
    unknown = sorted(set(overrides) - set(student.defaults))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for student {name!r}; known: "
                          f"{', '.join(sorted(student.defaults))}.")
    options = {**student.defaults, **overrides}
    if student.kind == "word":
        if vocab is None:
            raise ConfigError(f"student {name!r} reads words: build_student needs vocab=Vocab(...).")
        if options["embeddings"] is not None and "emb_dim" not in overrides:
            options["emb_dim"] = int(options["embeddings"].shape[1])
        return _WORD_CLASSES[name](vocab_size=len(vocab), num_labels=spec.num_labels, shape=spec.shape,
                                   num_aspects=_num_aspects(spec), pad_id=vocab.pad_id, **options)
    if tokenizer is None:
        raise ConfigError(f"student {name!r} reads the teacher's sub-words: build_student needs tokenizer=the "
                          "teacher's tokenizer.")
    if options["pieces"] not in ("train", "full"):
        raise ConfigError(f"pieces {options['pieces']!r} for student {name!r}: use train (the pieces of the training "
                          "text) or full (every piece of the teacher's tokenizer).")
    if options["pieces"] == "train" and used_ids is None:
        raise ConfigError(f"student {name!r} with pieces: train needs used_ids=the training features' input ids.")
    vocab_map = VocabMap.from_ids(used_ids, tokenizer) if options["pieces"] == "train" else None
    if name == PRUNED:
        if teacher_model_dir is None:
            raise ConfigError("student 'pruned' is cut from the fine-tuned teacher: build_student needs "
                              "teacher_model_dir=the teacher run's model folder.")
        teacher = load_model(teacher_model_dir)
        if not isinstance(teacher, BertTaskModel) or teacher.vocab_map is not None:
            raise ConfigError(f"{teacher_model_dir} is not a full-vocabulary BERT teacher; 'pruned' cuts a teacher.")
        model = prune_layers(teacher, int(options["layers"]))
        return model if vocab_map is None else _keep_pieces(model, vocab_map, tokenizer)
    config = bert_student_config(name, tokenizer, dropout=options["dropout"])
    if options["init"] == "random":
        if vocab_map is not None:
            config.vocab_size, config.pad_token_id = len(vocab_map.kept_ids), vocab_map.row(tokenizer.pad_token_id)
        return BertTaskModel(BertTaskModel.from_config(config, spec).hf, spec, vocab_map)
    _check_pretrained_fits(str(options["init"]), config, name)
    model = BertTaskModel.from_encoder(options["init"], spec, hidden_dropout_prob=options["dropout"],
                                       attention_probs_dropout_prob=options["dropout"])
    return model if vocab_map is None else _keep_pieces(model, vocab_map, tokenizer)


def load_model(model_dir: str | os.PathLike) -> nn.Module:
    """Any model saved by kd-exam: kdexam.json marks a BERT model, config.json's `kdexam_model` a word student."""
    model_dir = Path(model_dir)
    if (model_dir / BERT_INFO).is_file():
        return BertTaskModel.from_pretrained(model_dir)
    config_path = model_dir / "config.json"
    name = rundir.read_json(config_path, run_dir=model_dir.parent).get(MODEL_KEY) if config_path.is_file() else None
    if name not in _WORD_CLASSES:
        raise ConfigError(f"{model_dir} is not a kd-exam model folder: it has neither {BERT_INFO} (BERT models) nor "
                          f"a config.json with {MODEL_KEY!r} (word students); point at a run's model/ folder.")
    return _WORD_CLASSES[name].from_pretrained(model_dir)


def save_random_bert(out_dir: str | os.PathLike, tokenizer, *, layers: int = 2, hidden: int = 32, heads: int = 2,
                     intermediate: int = 64, seed: int = 0) -> Path:
    """A tiny random BertModel and its tokenizer in a folder: a local 'pretrained' encoder for tests and demos.

    The weights depend only on `seed` (the caller's torch RNG is left as it was).
    """
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
