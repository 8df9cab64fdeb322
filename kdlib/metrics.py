"""IndoNLU's official metrics, reimplemented to give the same numbers as IndoNLU's scorer.

Classification tasks (SmSA, EmoT, WReTE) use sklearn macro-F1; the aspect tasks (CASA, HoASA) flatten
the per-example aspect labels first; tagging tasks (POS, NER, KEPS, TermA, FacQA) use the CoNLL chunk
F1 averaged over chunk types ("type-macro"), with CoNLL-2000 chunking rules for B/I/O tags.
Gold comes first in every signature here; IndoNLU's own functions take (hyps, labels).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

Span = tuple[int, int, str]  # (start, end exclusive, chunk type) within one sentence


@dataclass(frozen=True)
class ChunkScores:
    """Scores of a tagged corpus; per_type maps a chunk type to (p, r, f1, gold support).

    accuracy is IndoNLU's: one always-correct boundary token per sentence is counted with the tokens.
    """

    accuracy: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_type: dict[str, tuple[float, float, float, int]]


def _check_same_length(gold: Sequence, pred: Sequence, unit: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} {unit}s but pred has {len(pred)}")


def _check_aligned(gold: Sequence[Sequence], pred: Sequence[Sequence], unit: str) -> None:
    """Refuse misaligned input: IndoNLU zips and would silently drop the tail."""
    _check_same_length(gold, pred, unit)
    for i, (g, p) in enumerate(zip(gold, pred)):
        if isinstance(g, str) or isinstance(p, str):
            raise ValueError(f"{unit} {i} is a string ({g!r}, {p!r}); expected a sequence of labels")
        if len(g) != len(p):
            raise ValueError(f"{unit} {i}: gold has {len(g)} labels but pred has {len(p)}")


def macro_f1(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Macro-F1 over the labels seen in gold or pred, 0..1. gold, pred: (n_examples,) str or int labels."""
    return classification_report(gold, pred)["f1"]


def classification_report(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[str, float]:
    """IndoNLU's classification metrics: accuracy and macro precision/recall/F1. gold, pred: (n_examples,)."""
    # imported here: kdlib.predict reads chunks (spans) from this module in images without sklearn
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    _check_same_length(gold, pred, "example")
    # zero_division=0 gives the value of sklearn's default ("warn") without the warning IndoNLU prints.
    return {
        "f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "precision": float(precision_score(gold, pred, average="macro", zero_division=0)),
        "recall": float(recall_score(gold, pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
    }


def aspect_report(gold: Sequence[Sequence[Hashable]], pred: Sequence[Sequence[Hashable]]) -> dict[str, float]:
    """CASA/HoASA: classification_report of the flattened labels. gold, pred: (n_examples, n_aspects)."""
    _check_aligned(gold, pred, "example")
    flat = [list(itertools.chain.from_iterable(labels)) for labels in (gold, pred)]
    return classification_report(flat[0], flat[1])


def aspect_macro_f1(gold: Sequence[Sequence[Hashable]], pred: Sequence[Sequence[Hashable]]) -> float:
    """Macro-F1 over all (example, aspect) labels pooled. gold, pred: (n_examples, n_aspects)."""
    return aspect_report(gold, pred)["f1"]


def _parse_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'B' -> ('B', ''); 'O' -> ('O', ''). Split at the first '-', as conlleval."""
    prefix, _, chunk_type = tag.partition("-")
    # IOBES or bracket tags would need conlleval's other rules; no IndoNLU task uses them.
    if tag != "O" and prefix not in ("B", "I"):
        raise ValueError(f"unsupported tag {tag!r}: expected 'O', 'B', 'I', 'B-<type>' or 'I-<type>'")
    return prefix, chunk_type


def spans(tags: Sequence[str]) -> list[Span]:
    """Chunks of one sentence by conlleval's rules. tags: (n_tokens,) -> spans in order of start.

    A token continues the open chunk only if it is I- of the same type as the token before and that
    token is not O; any other non-O token starts a chunk (so I-X after O or after B-Y starts one).
    The sentence start acts as an O, so each sentence is chunked on its own.
    """
    chunks: list[Span] = []
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate(tags):
        prefix, chunk_type = _parse_tag(tag)
        if prefix == "I" and prev_prefix != "O" and chunk_type == prev_type:
            start, _, _ = chunks[-1]
            chunks[-1] = (start, i + 1, chunk_type)
        elif prefix != "O":
            chunks.append((i, i + 1, chunk_type))
        prev_prefix, prev_type = prefix, chunk_type
    return chunks


def _prf(correct: int, guessed: int, total: int) -> tuple[float, float, float]:
    """Precision, recall, F1 with 0 for an empty denominator; F1 from p and r so floats match conlleval."""
    p = correct / guessed if guessed else 0.0
    r = correct / total if total else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _mean(values: list[float]) -> float:
    # A plain left-to-right sum in conlleval's type order reproduces its floats bit for bit.
    return sum(values) / len(values) if values else 0.0


def chunk_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> ChunkScores:
    """IndoNLU's conll_evaluation. gold, pred: (n_sentences, n_tokens_i) tag strings.

    A chunk is correct when start, end and type all match. Macro averages run over the types found in
    gold or pred, in order of first appearance (gold first), so a type only predicted counts with F1 0.
    With no chunk at all every chunk score is 0.0 (IndoNLU divides by zero there).
    """
    _check_aligned(gold, pred, "sentence")
    found_gold, found_pred, correct = Counter(), Counter(), Counter()
    tags_right = 0
    for gold_tags, pred_tags in zip(gold, pred):
        gold_spans, pred_spans = spans(gold_tags), spans(pred_tags)
        found_gold.update(t for _, _, t in gold_spans)
        found_pred.update(t for _, _, t in pred_spans)
        correct.update(t for _, _, t in set(gold_spans) & set(pred_spans))
        tags_right += sum(_parse_tag(g) == _parse_tag(p) for g, p in zip(gold_tags, pred_tags))
    # conlleval feeds an (O, O) token after every sentence and counts it as a correct tag.
    n_tokens = sum(len(tags) for tags in gold) + len(gold)
    tags_right += len(gold)
    types = list(dict.fromkeys([*found_gold, *found_pred]))
    per_type = {t: (*_prf(correct[t], found_pred[t], found_gold[t]), found_gold[t]) for t in types}
    micro = _prf(sum(correct.values()), sum(found_pred.values()), sum(found_gold.values()))
    return ChunkScores(
        accuracy=tags_right / n_tokens if n_tokens else 0.0,
        micro_precision=micro[0],
        micro_recall=micro[1],
        micro_f1=micro[2],
        macro_precision=_mean([s[0] for s in per_type.values()]),
        macro_recall=_mean([s[1] for s in per_type.values()]),
        macro_f1=_mean([s[2] for s in per_type.values()]),
        per_type=per_type,
    )


def chunk_f1_macro(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """IndoNLU's tagging F1 (tm_f1): chunk F1 averaged over chunk types. gold, pred: (n_sentences, n_i)."""
    return chunk_scores(gold, pred).macro_f1


def chunk_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """What IndoNLU reports for tagging tasks: type-macro P/R/F1 and token accuracy (see chunk_scores)."""
    s = chunk_scores(gold, pred)
    return {
        "f1": s.macro_f1,
        "precision": s.macro_precision,
        "recall": s.macro_recall,
        "accuracy": s.accuracy,
    }


def per_label_f1(metric: str, gold: Sequence, pred: Sequence) -> dict[str, tuple[float, int]]:
    """The parts a metric's macro average is made of: label (chunk type for tagging) -> (F1 0..1, gold support).

    Shapes as `score` takes them; classification labels may be ids or names (keys are their str). Labels only
    predicted are included with support 0, as the macro averages count them.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {sorted(METRICS)}")
    if metric == "chunk_f1_macro":
        return {t: (f, n) for t, (_, _, f, n) in chunk_scores(gold, pred).per_type.items()}
    from sklearn.metrics import f1_score

    if metric == "aspect_macro_f1":
        _check_aligned(gold, pred, "example")
        gold, pred = (list(itertools.chain.from_iterable(labels)) for labels in (gold, pred))
    _check_same_length(gold, pred, "example")
    labels = sorted(set(gold) | set(pred), key=str)
    scores = f1_score(gold, pred, labels=labels, average=None, zero_division=0)
    support = Counter(gold)
    return {str(label): (float(f), support[label]) for label, f in zip(labels, scores)}


# Each entry returns {"f1", "precision", "recall", "accuracy"}; "f1" is the metric the key names.
METRICS: dict[str, Callable[[Sequence, Sequence], dict[str, float]]] = {
    "macro_f1": classification_report,
    "aspect_macro_f1": aspect_report,
    "chunk_f1_macro": chunk_report,
}


def score(metric: str, gold: Sequence, pred: Sequence) -> dict[str, float]:
    """Scores of pred against gold under the named IndoNLU metric; shapes as the METRICS entry expects."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {sorted(METRICS)}")
    return METRICS[metric](gold, pred)
