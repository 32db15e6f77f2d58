"""``/api/documents`` through web in front of the real writer and serving (a stdlib index the jobs built, the real
MiniLM): upsert -> search finds it with its fields and filters; change -> the new text is found; get; delete ->
gone from search and get; bad items refused by item and field with the rest applied; whole-request refusals
(body, size, media type, scene, key scope); a full write queue is 429 with Retry-After; whoami; and a web with no
writer answers 501."""
from __future__ import annotations

import pytest
import requests

from tests.support.loops import eventually
from tests.support.web import TIMEOUT, WebThread, assert_error, web_settings
from tests.support.writes import writable_scene

pytestmark = pytest.mark.slow
URL = "/api/documents"


@pytest.fixture(scope="module")
def writes(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("web-writes")
    with writable_scene(tmp, minilm_repo, service_loop, MMSEARCH_MAX_BATCH_DOCUMENTS="8",
                        MMSEARCH_WRITER_QUEUE_DOCUMENTS="6", MMSEARCH_WRITER_RETRY_AFTER_SECONDS="3") as scene:
        settings = web_settings(scene.stack.address, writer_address=scene.writer.target, documents_body_bytes=64 * 1024,
                                serving_key_file=scene.relay_file,
                                access={"api_keys_file": scene.keys_file, "anonymous_scenes": ""})
        with WebThread(settings) as web:
            yield scene, web


def call(writes, method: str, role: str = "writer", **kwargs) -> requests.Response:
    scene, web = writes
    return requests.request(method, web.url + URL, headers={"X-API-Key": scene.keys[role]}, timeout=TIMEOUT, **kwargs)


def upsert(writes, *documents, role: str = "writer", scene: str | None = None) -> requests.Response:
    return call(writes, "POST", role, json={"scene": scene or writes[0].scene, "documents": list(documents)})


def search(writes, q: str, *filters: str) -> list[dict]:
    scene, web = writes
    reply = requests.get(web.url + "/api/search", params={"scene": scene.scene, "q": q, "filter": list(filters)},
                         headers={"X-API-Key": scene.keys["reader"]}, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()["items"]


def found(writes, q: str, ident: int, *filters: str):
    return next((item for item in search(writes, q, *filters) if item["id"] == ident), None)


def test_upsert_change_get_delete_round_trip(writes):
    text = "Brew a pot of jasmine tea with water just below boiling."
    reply = upsert(writes, {"id": 8_000_001, "fields": {"question": "tea.brew", "answer": text, "category": "kitchen",
                                                        "rank": 7}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["results"] == [{"index": 0, "id": 8_000_001, "status": "applied", "field": None, "reason": None}]
    assert body["collection"] == "live_1" and body["position"] > 0
    hit = eventually(lambda: found(writes, "how do I make jasmine tea", 8_000_001, "category:kitchen"),
                     "the new document is found through web with its filter")
    assert hit["summary"]["answer"] == text and hit["summary"]["category"] == "kitchen"
    assert found(writes, "how do I make jasmine tea", 8_000_001, "category:workshop") is None
    again = upsert(writes, {"id": 8_000_001, "fields": {"question": "tea.brew", "answer": text, "category": "kitchen",
                                                        "rank": 7}})
    assert again.json()["results"][0]["status"] == "unchanged"
    changed = "Sharpen a chisel on a whetstone, keeping the bevel flat."
    upsert(writes, {"id": 8_000_001, "fields": {"question": "tea.brew", "answer": changed, "category": "workshop",
                                                "rank": 7}})
    eventually(lambda: (h := found(writes, "sharpen a chisel on a whetstone", 8_000_001)) and
               h["summary"]["answer"] == changed, "the changed text is what is found and shown")
    got = call(writes, "GET", "reader", params={"scene": "live", "id": [8_000_001, 42]})
    assert got.status_code == 200, got.text
    assert got.json()["missing"] == [42] and got.json()["collection"] == "live_1"
    [stored] = got.json()["documents"]
    assert stored["id"] == 8_000_001 and stored["fields"]["answer"] == changed and stored["fields"]["rank"] == 7
    assert len(stored["content_sha256"]) == 64
    gone = call(writes, "DELETE", params={"scene": "live", "id": [8_000_001, 43]})
    assert [r["status"] for r in gone.json()["results"]] == ["applied", "not_found"]
    assert found(writes, "sharpen a chisel on a whetstone", 8_000_001) is None
    assert call(writes, "GET", params={"scene": "live", "id": 8_000_001}).json()["missing"] == [8_000_001]


def test_bad_items_are_refused_by_item_and_field_and_the_rest_applied(writes):
    reply = upsert(writes, {"id": "abc", "fields": {"answer": "x"}},
                   {"id": 8_000_010, "fields": {"answer": "A fine document about kites.", "category": "c", "rank": 1}},
                   {"id": 8_000_011, "fields": {"answer": "bad rank", "category": "c", "rank": "high"}},
                   {"id": 8_000_012, "fields": ["not", "an", "object"]},
                   {"id": 8_000_013, "fields": {"answer": "img", "rank": 1}, "image_base64": "!!not base64"},
                   {"fields": {"answer": "no id", "rank": 1}},
                   {"id": 8_000_014, "fields": {"answer": "x", "rank": 1}, "colour": "red"})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert results[1]["status"] == "applied"
    fields = {r["index"]: (r["status"], r["field"]) for r in results}
    assert fields[0] == ("refused", "id") and fields[2] == ("refused", "fields.rank")
    assert fields[3] == ("refused", "fields") and fields[4] == ("refused", "image")
    assert fields[5] == ("refused", "id") and fields[6] == ("refused", "colour")
    assert "number" in results[2]["reason"] and "integer" in results[0]["reason"]


def test_whole_requests_refused_say_what_to_fix(writes):
    scene, web = writes
    key = {"X-API-Key": scene.keys["writer"]}
    assert_error(requests.post(web.url + URL, data=b"{not json", timeout=TIMEOUT,
                               headers={**key, "Content-Type": "application/json"}), 400, "body", "not JSON")
    assert_error(call(writes, "POST", json={"documents": [{"id": 1}]}), 400, "scene", "scene is required")
    assert_error(call(writes, "POST", json={"scene": "live", "documents": []}), 400, "documents", "non-empty")
    assert_error(requests.post(web.url + URL, data="scene=live", timeout=TIMEOUT,
                               headers={**key, "Content-Type": "application/x-www-form-urlencoded"}),
                 415, "body", "application/json")
    assert_error(upsert(writes, {"id": 1, "fields": {"answer": "x" * 100_000}}), 413, "body",
                 "MMSEARCH_DOCUMENTS_BODY_BYTES")
    assert_error(upsert(writes, *[{"id": 8_100_000 + i, "fields": {"answer": "x", "rank": 1}} for i in range(9)]),
                 400, None, "MMSEARCH_MAX_BATCH_DOCUMENTS")
    assert_error(upsert(writes, {"id": 1, "fields": {"answer": "x"}}, scene="nowhere"), 404, None, "nowhere")
    assert_error(upsert(writes, {"id": 1, "fields": {"answer": "x"}}, role="reader"), 403, None, "write")
    assert_error(upsert(writes, {"id": 1, "fields": {"answer": "x"}}, role="elsewhere"), 403, None, "live")
    assert_error(call(writes, "DELETE", params={"scene": "live", "id": "x1"}), 400, "id", "not an integer")
    assert_error(call(writes, "GET", params={"id": 1}), 400, "scene", "scene is required")
    full = upsert(writes, *[{"id": 8_200_000 + i, "fields": {"answer": "x", "rank": 1}} for i in range(7)])
    assert_error(full, 429, None, "MMSEARCH_WRITER_QUEUE_DOCUMENTS")
    assert full.headers["Retry-After"] == "3"


def test_whoami_tells_a_key_what_it_may_do(writes):
    scene, web = writes
    me = requests.get(web.url + "/api/whoami", headers={"X-API-Key": scene.keys["elsewhere"]}, timeout=TIMEOUT)
    assert me.json() == {"key_id": me.json()["key_id"], "scopes": ["search", "write"], "scenes": ["other"]}
    assert requests.get(web.url + "/api/whoami", headers={"X-API-Key": scene.keys["reader"]},
                        timeout=TIMEOUT).json()["scenes"] is None
    assert_error(requests.get(web.url + "/api/whoami", timeout=TIMEOUT), 401, None, "API key is required")


def test_a_web_without_a_writer_says_writes_are_not_configured(writes):
    scene, _ = writes
    access = {"api_keys_file": scene.keys_file, "anonymous_scenes": ""}
    with WebThread(web_settings(scene.stack.address, access=access)) as bare:
        for method in ("GET", "POST", "DELETE"):
            reply = requests.request(method, bare.url + URL, params={"scene": "live", "id": 1}, timeout=TIMEOUT,
                                     json={"scene": "live", "documents": [{"id": 1}]},
                                     headers={"X-API-Key": scene.keys["writer"]})
            assert_error(reply, 501, None, "MMSEARCH_WRITER_ADDRESS")
