"""Live writes from the page (headless Chromium) through web in front of the real writer and serving (a stdlib
index the jobs built, the real MiniLM): a key with scope write sees the add form, adds a document that the search
then finds, and deletes it from its card; a key without write sees neither the form nor delete buttons."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests

from tests.support.web import TIMEOUT, WebThread, web_settings
from tests.support.writes import writable_scene
from tests.web.pages import WAIT_MS, results

pytestmark = [pytest.mark.browser, pytest.mark.slow]
IDENT = 8_100_001
TEXT = "Wind the grandfather clock every Sunday and oil its pendulum hinge twice a year."


@pytest.fixture(scope="module")
def writes(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("page-writes")
    with writable_scene(tmp, minilm_repo, service_loop) as scene:
        settings = web_settings(scene.stack.address, writer_address=scene.writer.target,
                                serving_key_file=scene.relay_file,
                                access={"api_keys_file": scene.keys_file, "anonymous_scenes": ""})
        with WebThread(settings) as web:
            yield scene, web


def open_with_key(page, web, key: str, query: str) -> None:
    page.goto(f"{web.url}/?" + urlencode({"q": query}))
    page.wait_for_selector("#key-form:not([hidden])", timeout=WAIT_MS)
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    results(page)


def stored(writes, ident: int) -> list[int]:
    scene, web = writes
    reply = requests.get(web.url + "/api/documents", params={"scene": scene.scene, "id": ident},
                         headers={"X-API-Key": scene.keys["reader"]}, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return [d["id"] for d in reply.json()["documents"]]


def test_a_writer_adds_a_document_that_search_finds_and_deletes_it_from_its_card(page, writes):
    scene, web = writes
    open_with_key(page, web, scene.keys["writer"], "how do I keep an old clock running")
    page.wait_for_selector("#add:not([hidden])", timeout=WAIT_MS)
    assert page.get_attribute("body", "data-writes") == "yes"
    assert page.locator(".result button.delete").count() == page.locator(".result").count()
    page.click("#add summary")
    # The form asks first for what the scene's live version embeds (encoded with --text-field answer), then for
    # question, the other field its cards show; then the scene's scalar fields.
    listed = requests.get(web.url + "/api/scenes", headers={"X-API-Key": scene.keys["writer"]}, timeout=TIMEOUT)
    assert [s["text_fields"] for s in listed.json()["scenes"] if s["name"] == scene.scene] == [["answer"]]
    asked = page.eval_on_selector_all("#add-fields [data-field]", "inputs => inputs.map(i => i.dataset.field)")
    assert asked[:2] == ["answer", "question"] and {"category", "rank"} <= set(asked), asked
    page.fill("#add-id", "1.5")
    page.click("#add-go")
    page.wait_for_function("() => document.querySelector('#add-status').textContent.startsWith('id:')",
                           timeout=WAIT_MS)  # named before anything is sent
    page.fill("#add-id", str(IDENT))
    page.fill("#add-fields [data-field=question]", "clock.care")
    page.fill("#add-fields [data-field=answer]", TEXT)
    page.fill("#add-fields [data-field=category]", "household")
    page.fill("#add-fields [data-field=rank]", "3")
    with page.expect_response(lambda r: r.url.endswith("/api/documents"), timeout=WAIT_MS) as added:
        page.click("#add-go")
    assert added.value.status == 200 and added.value.request.headers["x-api-key"] == scene.keys["writer"]
    card = page.locator(f'.result[data-id="{IDENT}"]')
    card.wait_for(timeout=WAIT_MS)  # the search ran again and finds it
    assert card.locator(".answer").text_content() == TEXT
    assert card.locator(".chip").text_content() == "household"
    assert page.text_content("#add-status") == f"Added #{IDENT}"
    assert stored(writes, IDENT) == [IDENT]

    delete = card.locator("button.delete")
    delete.click()  # arms it: nothing is deleted yet
    assert delete.text_content() == f"Delete #{IDENT}?" and stored(writes, IDENT) == [IDENT]
    with page.expect_response(lambda r: "/api/documents?" in r.url, timeout=WAIT_MS) as deleted:
        delete.click()
    assert deleted.value.status == 200 and deleted.value.request.method == "DELETE"
    card.wait_for(state="detached", timeout=WAIT_MS)
    assert stored(writes, IDENT) == []
    page.reload()  # a fresh search of the same query does not find it either
    results(page)
    assert page.locator(f'.result[data-id="{IDENT}"]').count() == 0
    assert page.dialogs == []


def test_a_key_without_write_sees_no_form_and_no_delete_button(page, writes):
    scene, web = writes
    open_with_key(page, web, scene.keys["reader"], "parse a CSV file")
    page.wait_for_selector("body[data-writes=no]", timeout=WAIT_MS)  # whoami answered: scopes without write
    assert page.locator("#add").is_hidden()
    assert page.locator(".result").count() > 0 and page.locator("button.delete").count() == 0
