"""sync embeds a changed document with the text template the collection was built with (recorded by
encode, push-milvus and the collection's state), refuses another one, and reads collections recorded
before templates (``text_field``). The stages run in this process on a Milvus Lite file."""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.registry import read_state
from mmsearch.core.milvus.registry_writes import update_state
from mmsearch.jobs.encode import TextInputs, encode, encode_records, load_encoder
from mmsearch.jobs.errors import JobError
from mmsearch.jobs.publish import publish
from mmsearch.jobs.push_milvus import push_milvus
from mmsearch.jobs.push_mongo import push_mongo
from mmsearch.jobs.sync import sync
from tests.support.indexes import write_corpus

SCENE = "titled"
MODEL = "tiny-multilingual"
TEMPLATE = "{question}: {answer}"
RECORDS = [{"id": i, "question": f"product {i}", "answer": f"a thing that does task {i}"} for i in range(12)]


def stored(milvus: str, name: str, ids: list[int]) -> tuple[dict[int, np.ndarray], dict]:
    client = connect(milvus)
    try:
        rows = client.get(name, ids=ids, output_fields=["vector"])
        return {int(r["id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}, read_state(client, name)
    finally:
        close(client, milvus)


def embedded(repo: str, template: str, records: list[dict]) -> dict[int, np.ndarray]:
    encoder = load_encoder(repo, MODEL, device="cpu")
    ids, vectors, _ = encode_records(encoder, TextInputs(encoder, template), records, 8)
    return dict(zip(ids.tolist(), vectors))


@pytest.fixture()
def built(tmp_path, tiny_multilingual_repo, mongo_server):
    milvus, repo = str(tmp_path / "milvus.db"), str(tiny_multilingual_repo)
    write_corpus(tmp_path / "w1", RECORDS)
    encode(str(tmp_path / "w1"), repo, MODEL, text_template=TEMPLATE, device="cpu")
    push_milvus(str(tmp_path / "w1"), milvus, SCENE, "1", repo, MODEL)
    push_mongo(str(tmp_path / "w1"), mongo_server, f"{SCENE}_1")
    publish(milvus, SCENE, "1")
    changed = [{**r, "answer": f"now it does chore {r['id']}"} for r in RECORDS[:3]]
    write_corpus(tmp_path / "w2", changed + RECORDS[3:])
    run = lambda **flags: sync(str(tmp_path / "w2"), milvus, mongo_server, SCENE, repo, MODEL,  # noqa: E731
                               collection="{collection}", device="cpu", **flags)
    return {"milvus": milvus, "repo": repo, "changed": changed, "sync": run}


def test_sync_embeds_a_changed_document_with_the_recorded_template(built):
    name = f"{SCENE}_1"
    assert stored(built["milvus"], name, [0])[1]["text_template"] == TEMPLATE
    with pytest.raises(JobError, match=rf"--text-field 'answer': collection {name} embeds '\{{question\}}: "
                                       r"\{answer\}'; sync must embed the same text"):
        built["sync"](text_field="answer")
    with pytest.raises(JobError, match=r"--text-template '\{answer\}': collection"):
        built["sync"](text_template="{answer}")
    summary = built["sync"]()
    assert (summary["changed"], summary["new"], summary["removed"]) == (3, 0, 0)
    vectors, state = stored(built["milvus"], name, [r["id"] for r in built["changed"]])
    expected = embedded(built["repo"], TEMPLATE, built["changed"])
    answer_only = embedded(built["repo"], "{answer}", built["changed"])
    for i, vector in vectors.items():
        assert np.allclose(vector, expected[i], atol=1e-5) and not np.allclose(vector, answer_only[i], atol=1e-3)
    assert state["text_template"] == TEMPLATE
    assert built["sync"](text_template=TEMPLATE)["changed"] == 0  # the same template, given: accepted


def test_a_collection_recorded_before_templates_syncs_with_its_field(built):
    name = f"{SCENE}_1"
    client = connect(built["milvus"])
    try:  # what push-milvus recorded before templates: the field alone
        update_state(client, name, text_template=None, text_field="answer")
    finally:
        close(client, built["milvus"])
    with pytest.raises(JobError, match=rf"--text-template '\{{question\}}: \{{answer\}}': collection {name} "
                                       r"embeds '\{answer\}'"):
        built["sync"](text_template=TEMPLATE)
    assert built["sync"]()["changed"] == 3
    vectors, state = stored(built["milvus"], name, [0])
    assert np.allclose(vectors[0], embedded(built["repo"], "{answer}", built["changed"][:1])[0], atol=1e-5)
    assert state["text_template"] == "{answer}"
