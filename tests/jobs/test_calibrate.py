"""The calibrated cutoff: the lowest score that keeps a target precision, by hand; monotone in the target
and reproducible whatever the order of the judged results (property tests)."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from mmsearch.jobs.calibrate import calibrate, judged

PAIRS = [(0.9, True), (0.8, False), (0.7, True), (0.6, True), (0.5, False), (0.4, False), (0.3, True)]


def test_the_lowest_score_that_keeps_the_precision_by_hand():
    # precision at each score: .9 1/1, .8 1/2, .7 2/3, .6 3/4, .5 3/5, .4 3/6, .3 4/7
    assert calibrate(PAIRS, 0.75) == {"precision": 0.75, "score": 0.6, "kept": 4, "relevant": 3, "achieved": 0.75,
                                      "judged": 7}
    assert calibrate(PAIRS, 0.5)["score"] == 0.3          # 4/7 at the lowest score still keeps a half
    assert calibrate(PAIRS, 0.6)["score"] == 0.5          # 3/5; 3/6 and 4/7 fall short
    assert calibrate(PAIRS, 1.0)["score"] == 0.9
    unreachable = calibrate([(0.9, False), (0.8, True)], 0.9)
    assert unreachable["score"] is None and unreachable["kept"] == 0 and unreachable["judged"] == 2
    assert calibrate([], 0.5)["score"] is None


def test_tied_scores_are_kept_or_cut_together():
    # at 0.8 two results tie, one relevant: keeping only the relevant one is not a cutoff a score can express
    assert calibrate([(0.9, True), (0.8, True), (0.8, False)], 0.9)["score"] == 0.9
    assert calibrate([(0.9, True), (0.8, True), (0.8, False)], 0.6)["score"] == 0.8


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_a_target_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="target precision"):
        calibrate(PAIRS, bad)


def test_judged_marks_the_labelled_results():
    assert judged([0.9, 0.5], [7, 8], {8, 99}) == [(0.9, False), (0.5, True)]


pairs = st.lists(st.tuples(st.sampled_from([x / 20 for x in range(21)]), st.booleans()), max_size=60)


@settings(max_examples=200, deadline=None)
@given(pairs, st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_a_higher_target_never_gives_a_lower_cutoff(judged_pairs, a, b):
    low, high = sorted((a, b))
    cut_low, cut_high = calibrate(judged_pairs, low)["score"], calibrate(judged_pairs, high)["score"]
    as_number = (lambda s: float("inf") if s is None else s)  # noqa: E731  (unreachable: nothing kept)
    assert as_number(cut_high) >= as_number(cut_low)


@settings(max_examples=200, deadline=None)
@given(pairs, st.floats(0.01, 1.0), st.integers(0, 2**32 - 1))
def test_reproducible_whatever_the_order_and_it_keeps_the_target(judged_pairs, target, seed):
    shuffled = list(judged_pairs)
    random.Random(seed).shuffle(shuffled)
    result = calibrate(judged_pairs, target)
    assert calibrate(shuffled, target) == result
    if result["score"] is not None:
        kept = [rel for score, rel in judged_pairs if score >= result["score"]]
        assert len(kept) == result["kept"] and sum(kept) / len(kept) >= target
        lower = [s for s, _ in judged_pairs if s < result["score"]]
        for t in set(lower):  # no lower score keeps the target
            below = [rel for score, rel in judged_pairs if score >= t]
            assert sum(below) / len(below) < target
