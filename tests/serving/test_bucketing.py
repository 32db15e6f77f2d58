"""A/B bucketing: weights honoured, deterministic, defaults and forced arms."""
import hashlib

import pytest

from mmsearch.services.serving.config import bucketing


def test_10k_users_split_within_2_points_of_weights():
    weights = [50, 30, 20]
    arms = ["a", "b", "c"]
    counts = dict.fromkeys(arms, 0)
    for i in range(10_000):
        [(_, arm)] = bucketing.assign([("layer", "salt-1", arms, weights, "a")], f"user-{i}")
        counts[arm] += 1
    for arm, weight in zip(arms, weights):
        assert abs(counts[arm] / 10_000 - weight / 100) < 0.02, counts


def test_same_user_always_same_arm_and_salt_reshuffles():
    layer = ("layer", "s", ["a", "b"], [1, 1], "a")
    first = [bucketing.assign([layer], f"u{i}")[0][1] for i in range(200)]
    again = [bucketing.assign([layer], f"u{i}")[0][1] for i in range(200)]
    assert first == again
    other = [bucketing.assign([("layer", "other", ["a", "b"], [1, 1], "a")], f"u{i}")[0][1] for i in range(200)]
    assert other != first


def test_point_is_sha256_of_user_hash_salt():
    digest = hashlib.sha256(b"alice#s1").digest()
    assert bucketing.bucket_point("alice", "s1") == int.from_bytes(digest[:8], "big") / 2**64


def test_no_user_gets_default_and_force_wins():
    layers = [("l1", "s", ["a", "b"], [0, 1], "a"), ("l2", "t", ["x", "y"], [1, 0], "y")]
    assert bucketing.assign(layers, "") == [("l1", "a"), ("l2", "y")]
    assert bucketing.assign(layers, "bob") == [("l1", "b"), ("l2", "x")]  # zero weights never picked
    assert bucketing.assign(layers, "bob", {"l2": "y"}) == [("l1", "b"), ("l2", "y")]


def test_force_unknown_layer_or_arm_is_an_error():
    layers = [("l1", "s", ["a", "b"], [1, 1], "a")]
    with pytest.raises(KeyError, match="unknown layer"):
        bucketing.assign(layers, "u", {"nope": "a"})
    with pytest.raises(KeyError, match="not an arm of layer 'l1'"):
        bucketing.assign(layers, "u", {"l1": "zzz"})


def test_cumulative_rejects_zero_total():
    with pytest.raises(ValueError):
        bucketing.cumulative([0, 0])
