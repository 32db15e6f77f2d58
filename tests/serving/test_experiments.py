"""Experiment config: schema, merge order, clear errors, and a loader that never swaps in a bad file."""
import os
from pathlib import Path

import pytest
import yaml

from mmsearch.services.serving.config.experiments import ConfigError, merge, parse_config
from mmsearch.services.serving.config.store import ConfigStore

EXAMPLE = Path(__file__).parents[2] / "services" / "serving" / "examples" / "experiments.yaml"

BASE = {
    "scenes": {
        "t2t": {
            "modality": "text",
            "defaults": {
                "query": {"text": {"model": "minilm"}},
                "match": {"collection": "t2t", "top_k": 10, "params": {"nprobe": 8}},
                "summary": {"collection": "docs"},
            },
            "layers": [
                {"name": "l1", "arms": [
                    {"name": "a", "weight": 1},
                    {"name": "b", "weight": 1, "overrides": {"match": {"top_k": 5, "params": {"ef": 1}}}},
                ]},
                {"name": "l2", "default": "y", "arms": [
                    {"name": "x", "weight": 1, "overrides": {"match": {"top_k": 7}}},
                    {"name": "y", "weight": 1},
                ]},
            ],
        }
    }
}


def _text(cfg=BASE) -> str:
    return yaml.safe_dump(cfg)


def test_example_config_is_valid():
    experiments = parse_config(EXAMPLE.read_bytes(), str(EXAMPLE))  # what ConfigStore does with the file
    assert set(experiments.scenes) == {"t2t", "t2i"}
    assert experiments.scenes["t2i"].image_query and not experiments.scenes["t2t"].image_query


def test_arms_merge_onto_defaults_in_layer_order():
    scene = parse_config(_text()).scenes["t2t"]
    assert scene.arms[("a", "y")].match.top_k == 10
    assert scene.arms[("b", "y")].match.top_k == 5
    assert scene.arms[("b", "x")].match.top_k == 7        # the later layer wins
    assert scene.arms[("b", "x")].match.params == {"ef": 1}  # params replace, not merge
    assert scene.arms[("a", "x")].match.params == {"nprobe": 8}
    assert scene.default_arm is scene.arms[("a", "y")]       # first arm / explicit default


def test_a_scene_note_is_one_line_of_text_with_the_scene():
    assert parse_config(_text()).scenes["t2t"].note == ""  # none unless given
    cfg = {"scenes": {"t2t": {**BASE["scenes"]["t2t"], "note": "Random weights: <b>chance</b>\n"}}}
    assert parse_config(_text(cfg)).scenes["t2t"].note == "Random weights: <b>chance</b>"  # a block's last break
    cfg["scenes"]["t2t"]["note"] = "x" * 300
    assert len(parse_config(_text(cfg)).scenes["t2t"].note) == 300


def test_merge_rule():
    assert merge({"a": {"b": 1, "c": 2}, "params": {"x": 1}}, {"a": {"b": 3}, "params": {"y": 2}}) == {
        "a": {"b": 3, "c": 2}, "params": {"y": 2}}


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["scenes"]["t2t"]["layers"][0]["arms"][1].update(weight=-1),
     r"scenes\.t2t\.layers\[0\]\.arms\[1\]\.weight"),
    (lambda c: c["scenes"]["t2t"]["layers"][0]["arms"][1]["overrides"].update(rank={"name": "magic"}),
     r"arm l1=b,l2=.*unknown ranker 'magic'"),
    (lambda c: c["scenes"]["t2t"]["defaults"].update(colection="typo"), r"colection.*Extra inputs"),
    (lambda c: c["scenes"]["t2t"]["layers"][1].update(default="zzz"), r"default 'zzz' is not one of its arms"),
    (lambda c: c["scenes"]["t2t"]["layers"][0]["arms"].append({"name": "a", "weight": 1}), r"duplicate arm names"),
    (lambda c: c["scenes"]["t2t"]["defaults"].pop("summary"), r"summary.*Field required"),
    (lambda c: c["scenes"].clear(), r"scenes"),
    (lambda c: c["scenes"]["t2t"].update(note="x" * 301), r"scenes\.t2t\.note: .*at most 300 characters.*has 301"),
    (lambda c: c["scenes"]["t2t"].update(note="two\nlines"), r"scenes\.t2t\.note: .*one line.*line breaks"),
])
def test_bad_configs_are_refused_with_the_path(mutate, message):
    import copy

    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        parse_config(_text(cfg), "exp.yaml")


def test_not_yaml_is_refused():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("scenes: [unclosed", "exp.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- 1", "exp.yaml")


async def test_store_swaps_only_good_configs_and_follows_symlink_swaps(tmp_path):
    """The ConfigMap pattern: the mounted file is a symlink whose target is swapped."""
    seen = []

    async def activate(experiments):
        seen.append(experiments)
        return experiments

    def write_version(name: str, text: str) -> None:
        (tmp_path / name).write_text(text)
        tmp = tmp_path / "link.tmp"
        tmp.symlink_to(tmp_path / name)
        os.replace(tmp, tmp_path / "experiments.yaml")

    write_version("v1.yaml", _text())
    store = ConfigStore(tmp_path / "experiments.yaml", activate)
    assert await store.check() and store.current.scenes["t2t"].arms[("a", "y")].match.top_k == 10
    assert not await store.check()  # unchanged

    write_version("v2.yaml", "scenes: {t2t: {modality: text}}")  # broken
    assert not await store.check()
    assert "defaults" in store.last_error
    assert store.current.scenes["t2t"].arms[("a", "y")].match.top_k == 10  # the old one keeps serving
    assert not await store.check()  # the same broken file is not retried
    assert len(seen) == 1

    cfg = yaml.safe_load(_text())
    cfg["scenes"]["t2t"]["defaults"]["match"]["top_k"] = 3
    write_version("v3.yaml", _text(cfg))
    assert await store.check()
    assert store.current.scenes["t2t"].arms[("a", "y")].match.top_k == 3 and store.last_error == ""


async def test_store_retries_a_refused_activation(tmp_path):
    attempts = []

    async def activate(experiments):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("milvus down")
        return experiments

    (tmp_path / "e.yaml").write_text(_text())
    store = ConfigStore(tmp_path / "e.yaml", activate)
    assert not await store.check() and "milvus down" in store.last_error and store.current is None
    assert await store.check() and store.current is not None


def _with_match(match: dict, fields: list | None = None) -> str:
    import copy

    cfg = copy.deepcopy(BASE)
    cfg["scenes"]["t2t"]["layers"] = [{"name": "l1", "arms": [{"name": "a", "weight": 1, "overrides": {"match": match}}]}]
    if fields is not None:
        cfg["scenes"]["t2t"]["fields"] = fields
    return _text(cfg)


def test_retrievers_fusions_and_fields():
    hybrid = parse_config(_with_match({"retriever": "hybrid"})).scenes["t2t"]
    spec = hybrid.default_arm.match
    assert spec.retriever == "hybrid" and spec.fusion.name == "weighted"  # the tuned default
    assert spec.fusion.checked_params == {"weights": {"dense": 0.7, "bm25": 0.3}, "norm": "minmax"}
    rrf = parse_config(_with_match({"retriever": "hybrid", "fusion": {"name": "rrf"}})).scenes["t2t"]
    assert rrf.default_arm.match.fusion.checked_params == {"k": 60.0}
    fields = parse_config(_with_match({}, [{"name": "category", "type": "keyword"}])).scenes["t2t"].fields
    assert list(fields) == ["category"] and fields["category"].operators == ("eq", "in", "not")


@pytest.mark.parametrize("match, fields, words", [
    ({"retriever": "sparse"}, None, "match.retriever"),
    ({"fusion": {"name": "borda"}}, None, "unknown fusion 'borda'"),
    ({"fusion": {"name": "rrf", "params": {"k": 0}}}, None, "rrf.k must be a number in (0, 16384)"),
    ({"fusion": {"name": "weighted", "params": {"weights": {"dense": 1.5, "bm25": 0}}}}, None,
     "weighted.weights.dense must be a number in [0, 1]"),
    ({}, [{"name": "category", "type": "text"}], "fields[0].type"),
    ({}, [{"name": "id", "type": "number"}], "reserved"),
    ({}, [{"name": "c", "type": "bool"}, {"name": "c", "type": "bool"}], "duplicate field names ['c']"),
])
def test_bad_retrievers_and_fields_name_the_path(match, fields, words):
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_match(match, fields))
    assert words in str(caught.value)


def test_precision_is_an_arm_setting_that_picks_the_int8_copy_and_keeps_the_tokenizer():
    import copy

    cfg = copy.deepcopy(BASE)
    cfg["scenes"]["t2t"]["layers"][0]["arms"][1]["overrides"] = {"query": {"text": {"precision": "int8"}}}
    scene = parse_config(_text(cfg)).scenes["t2t"]
    fp32, int8 = scene.arms[("a", "y")].query.text, scene.arms[("b", "y")].query.text
    assert (fp32.encoder, fp32.preprocess) == ("minilm", "minilm")
    assert (int8.encoder, int8.preprocess, int8.model) == ("minilm-int8", "minilm", "minilm")
    cfg["scenes"]["t2t"]["layers"][0]["arms"][1]["overrides"] = {"query": {"text": {"precision": "int4"}}}
    with pytest.raises(ConfigError, match=r"arm l1=b,l2=x \(defaults \+ overrides\): query.text.precision: "
                                          r"Input should be 'fp32' or 'int8'"):
        parse_config(_text(cfg))
