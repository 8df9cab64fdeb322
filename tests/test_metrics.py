"""Hand-worked checks of kdlib.metrics; the arithmetic behind each expected value is in the comments."""

import itertools

import pytest
from sklearn.metrics import f1_score

from kdlib.metrics import (
    METRICS,
    aspect_macro_f1,
    chunk_f1_macro,
    chunk_scores,
    macro_f1,
    per_label_f1,
    score,
)


def test_macro_f1_ints_and_strings():
    # class 0: p 1/1, r 1/1 -> 1; class 1: never predicted, r 0/1 -> f 0;
    # class 2: p 2/3, r 2/2 -> f 2*(2/3)/(5/3) = 0.8; macro (1 + 0 + 0.8) / 3 = 0.6
    gold, pred = [0, 1, 2, 2], [0, 2, 2, 2]
    assert macro_f1(gold, pred) == pytest.approx(0.6)
    names = {0: "neg", 1: "neut", 2: "pos"}
    assert macro_f1([names[g] for g in gold], [names[p] for p in pred]) == pytest.approx(0.6)


def test_macro_f1_counts_a_label_only_predicted():
    # gold only "a"; pred invents "b": a: p 1/2, r 1/1 -> 2/3; b: p 0/1 -> 0; macro 1/3
    assert macro_f1(["a", "a"], ["a", "b"]) == pytest.approx(1 / 3)


def test_chunk_macro_differs_from_micro():
    # gold chunks PER[0:2], LOC[3], LOC[5]; pred PER[0:2], LOC[3]; correct 2
    # PER: p 1/1, r 1/1, f 1; LOC: p 1/1, r 1/2, f 2*0.5/1.5 = 2/3
    # macro f1 (1 + 2/3)/2 = 5/6, macro p (1+1)/2 = 1, macro r (1+0.5)/2 = 0.75
    # micro: p 2/2, r 2/3, f 2*(2/3)/(5/3) = 0.8
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"]]
    s = chunk_scores(gold, pred)
    assert s.macro_f1 == pytest.approx(5 / 6)
    assert s.micro_f1 == pytest.approx(0.8)
    assert (s.macro_precision, s.macro_recall) == pytest.approx((1.0, 0.75))
    assert (s.micro_precision, s.micro_recall) == pytest.approx((1.0, 2 / 3))
    assert s.per_type["LOC"] == pytest.approx((1.0, 0.5, 2 / 3, 2))
    assert chunk_f1_macro(gold, pred) == pytest.approx(5 / 6)


def test_accuracy_counts_sentence_boundaries_as_correct_tokens():
    # IndoNLU feeds an (O, O) token after each sentence: 5 of 6 tags right + 1 boundary -> 6/7
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"]]
    assert chunk_scores(gold, pred).accuracy == pytest.approx(6 / 7)


def test_pos_every_b_tag_is_its_own_chunk():
    # gold chunks NN, NN, VB | NN; pred NN, VB, VB | NN; correct: NN@0, VB@2, NN@s1 -> NN 2, VB 1
    # NN: p 2/2, r 2/3, f 0.8; VB: p 1/2, r 1/1, f 2/3; macro (0.8 + 2/3)/2 = 11/15
    # micro: p 3/4, r 3/4, f 0.75; accuracy (3 right + 2 boundaries) / (4 + 2) = 5/6
    gold = [["B-NN", "B-NN", "B-VB"], ["B-NN"]]
    pred = [["B-NN", "B-VB", "B-VB"], ["B-NN"]]
    s = chunk_scores(gold, pred)
    assert s.macro_f1 == pytest.approx(11 / 15)
    assert s.micro_f1 == pytest.approx(0.75)
    assert s.accuracy == pytest.approx(5 / 6)
    # two adjacent B-NN are two chunks, not one
    assert s.per_type["NN"][3] == 3


def test_bare_bio_has_the_empty_type():
    # gold chunks [1:3], [4]; pred [1], [4]; correct 1 -> p 1/2, r 1/2, f 1/2 for type ""
    gold = [["O", "B", "I", "O", "B"]]
    pred = [["O", "B", "O", "O", "B"]]
    s = chunk_scores(gold, pred)
    assert list(s.per_type) == [""]
    assert s.macro_f1 == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ([["O", "I-X", "I-X", "O"]], [["O", "B-X", "I-X", "O"]]),  # I-X after O opens X[1:3]
        ([["I-X", "O"]], [["B-X", "O"]]),  # a sentence starts as if after an O
        ([["O", "I", "I"]], [["O", "B", "I"]]),  # same rule without types
    ],
)
def test_i_tag_after_o_starts_a_chunk(gold, pred):
    # gold and pred hold the same single chunk, so F1 is 1 (it would be 0 if the I were dropped)
    assert chunk_f1_macro(gold, pred) == 1.0


def test_sentence_boundary_ends_a_chunk():
    # X[0:2] in sentence 0 and X[0:1] in sentence 1 are two chunks, not one spanning the break
    gold = [["B-X", "I-X"], ["I-X"]]
    pred = [["B-X", "I-X"], ["B-X"]]
    s = chunk_scores(gold, pred)
    assert s.per_type["X"][3] == 2
    assert s.macro_f1 == 1.0


def test_type_change_inside_a_run_splits_the_chunk():
    # conlleval splits B-X I-X I-Y into X[0:2] and Y[2:3], exactly what B-X I-X B-Y gives
    assert chunk_f1_macro([["B-X", "I-X", "I-Y", "O"]], [["B-X", "I-X", "B-Y", "O"]]) == 1.0
    # pred X[0:3] matches neither gold X[0:2] nor Y[2:3]: X p 0/1, Y r 0/1 -> macro 0
    s = chunk_scores([["B-X", "I-X", "I-Y", "O"]], [["B-X", "I-X", "I-X", "O"]])
    assert s.per_type["Y"][3] == 1
    assert s.macro_f1 == 0.0


def test_type_only_in_predictions_lowers_the_macro():
    # X: p 1/1, r 1/1, f 1; Z (only predicted): p 0/1, r 0/0 -> 0, f 0; macro (1 + 0)/2 = 0.5
    # micro: p 1/2, r 1/1, f 2/3
    gold = [["B-X", "O", "O"]]
    pred = [["B-X", "O", "B-Z"]]
    s = chunk_scores(gold, pred)
    assert list(s.per_type) == ["X", "Z"]
    assert s.macro_f1 == pytest.approx(0.5)
    assert s.micro_f1 == pytest.approx(2 / 3)


def test_no_chunk_at_all_scores_zero():
    # no chunk in gold or pred: IndoNLU divides by zero; we return 0. accuracy (2 + 1)/(2 + 1) = 1
    s = chunk_scores([["O", "O"]], [["O", "O"]])
    assert (s.macro_f1, s.micro_f1, s.macro_precision, s.macro_recall) == (0.0, 0.0, 0.0, 0.0)
    assert s.accuracy == 1.0
    assert s.per_type == {}


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match=r"gold has 2 sentences but pred has 1"):
        chunk_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match=r"sentence 1: gold has 3 labels but pred has 2"):
        chunk_scores([["O"], ["O", "B-X", "O"]], [["O"], ["O", "B-X"]])
    with pytest.raises(ValueError, match=r"example 0: gold has 2 labels but pred has 1"):
        aspect_macro_f1([["pos", "neg"]], [["pos"]])
    with pytest.raises(ValueError, match=r"gold has 2 examples but pred has 3"):
        macro_f1([0, 1], [0, 1, 1])


def test_flat_tag_list_and_unknown_tags_are_refused():
    # a flat list of tags would otherwise be read as one-letter sentences
    with pytest.raises(ValueError, match=r"sentence 0 is a string"):
        chunk_scores(["B", "I"], ["B", "I"])
    with pytest.raises(ValueError, match=r"'E-X'"):
        chunk_scores([["B-X", "E-X"]], [["B-X", "E-X"]])


def test_aspect_f1_flattens_before_averaging():
    # flat gold pos neg neut neg neg pos; flat pred pos pos neut neg neut pos
    # pos: p 2/3, r 2/2, f 0.8; neg: p 1/1, r 1/3, f 0.5; neut: p 1/2, r 1/1, f 2/3
    # macro (0.8 + 0.5 + 2/3)/3 = 59/90
    gold = [["pos", "neg", "neut"], ["neg", "neg", "pos"]]
    pred = [["pos", "pos", "neut"], ["neg", "neut", "pos"]]
    assert aspect_macro_f1(gold, pred) == pytest.approx(59 / 90)
    flat_gold, flat_pred = (list(itertools.chain.from_iterable(x)) for x in (gold, pred))
    assert aspect_macro_f1(gold, pred) == pytest.approx(f1_score(flat_gold, flat_pred, average="macro"))


def test_score_reports_f1_precision_recall_accuracy():
    # classification: class 0 p 1, r 1; class 1 p 0/0 -> 0, r 0; class 2 p 2/3, r 1
    # macro p (1 + 0 + 2/3)/3 = 5/9, macro r (1 + 0 + 1)/3 = 2/3, accuracy 3/4
    assert score("macro_f1", [0, 1, 2, 2], [0, 2, 2, 2]) == pytest.approx(
        {"f1": 0.6, "precision": 5 / 9, "recall": 2 / 3, "accuracy": 0.75}
    )
    # chunks: the case of test_chunk_macro_differs_from_micro, type-macro P/R/F1
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O"]]
    assert score("chunk_f1_macro", gold, pred) == pytest.approx(
        {"f1": 5 / 6, "precision": 1.0, "recall": 0.75, "accuracy": 6 / 7}
    )


def test_unknown_metric_lists_the_known_ones():
    assert set(METRICS) == {"macro_f1", "aspect_macro_f1", "chunk_f1_macro"}
    with pytest.raises(ValueError, match=r"'f1_micro'.*aspect_macro_f1.*chunk_f1_macro.*macro_f1"):
        score("f1_micro", [0], [0])


@pytest.mark.parametrize("metric, gold, pred, expected", [
    # the case of test_macro_f1_ints_and_strings: class 0 f 1 (1 gold), 1 f 0 (1), 2 f 0.8 (2)
    ("macro_f1", [0, 1, 2, 2], [0, 2, 2, 2], {"0": (1.0, 1), "1": (0.0, 1), "2": (0.8, 2)}),
    # the case of test_aspect_f1_flattens_before_averaging; support counts the flattened gold labels
    ("aspect_macro_f1", [["pos", "neg", "neut"], ["neg", "neg", "pos"]],
     [["pos", "pos", "neut"], ["neg", "neut", "pos"]], {"pos": (0.8, 2), "neg": (0.5, 3), "neut": (2 / 3, 1)}),
    # PER right; LOC 1 of 2 found, p 1 r 1/2 -> f 2/3; ORG only predicted: f 0 with support 0
    ("chunk_f1_macro", [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"]],
     [["B-PER", "I-PER", "B-ORG", "B-LOC", "O", "O"]], {"PER": (1.0, 1), "LOC": (2 / 3, 2), "ORG": (0.0, 0)}),
])
def test_per_label_f1_gives_the_parts_of_the_macro_average(metric, gold, pred, expected):
    parts = per_label_f1(metric, gold, pred)
    assert parts.keys() == expected.keys()
    for label, (f1, support) in expected.items():
        assert parts[label][0] == pytest.approx(f1) and parts[label][1] == support
    assert sum(f for f, _ in parts.values()) / len(parts) == pytest.approx(score(metric, gold, pred)["f1"])
    with pytest.raises(ValueError, match="unknown metric"):
        per_label_f1("accuracy", gold, pred)
