"""The web service against a hostile client: unbounded and malformed multipart bodies,
files in the image folder that are not images, error bodies that leaked the back end's topology,
and security headers missing from non-API errors.

Most cases need no search back end: the web service refuses them before calling serving, so they
run against ``web_down`` (serving's address has nothing listening).
"""
from __future__ import annotations

import logging
import threading
from urllib.parse import urlencode

import pytest
import requests

from mmsearch.core.limits import RequestLimits
from mmsearch.services.web.protocol import max_request_line_bytes
from tests.support.web import TIMEOUT, WebThread, assert_error, get, png, web_settings

MULTIPART = "multipart/form-data; boundary=XyZ"


def post(web: WebThread, body: bytes, content_type: str = MULTIPART) -> requests.Response:
    return requests.post(web.url + "/api/search", data=body, headers={"Content-Type": content_type}, timeout=TIMEOUT)


def form(*parts: tuple[str, bytes], boundary: str = "XyZ", end: bool = True) -> bytes:
    out = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode() + value + b"\r\n"
           for name, value in parts]
    return b"".join(out) + (f"--{boundary}--\r\n".encode() if end else b"")


@pytest.mark.parametrize("body, content_type, words", [
    (form(("scene", b"t2t")), "multipart/form-data", "malformed"),                      # no boundary
    (form(("scene", b"t2t"), boundary="Other"), MULTIPART, "malformed"),                # boundary not in the body
    (form(("scene", b"t2t"), ("image", png()[:30]), end=False)[:-1], MULTIPART, "malformed"),  # truncated part
    (b"garbage that is no multipart at all", MULTIPART, "malformed"),
    (b"--XyZ\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n\r\nx\r\n--in--\r\n--XyZ--\r\n",
     MULTIPART, "nested multipart"),
])
def test_malformed_multipart_is_400_naming_the_body(web_down, body, content_type, words):
    """These once gave 500."""
    assert_error(post(web_down, body, content_type), 400, "body", words)


def test_too_many_form_parts_are_refused_before_reading_them(web_down):
    """140,000 tiny fields (8 MB) once took many seconds to get a 400 and stalled /healthz."""
    body = form(*[(f"f{i}", b"x") for i in range(140_000)])
    health: list[int] = []
    probe = threading.Thread(target=lambda: health.append(get(web_down, "/healthz").status_code))
    probe.start()
    error = assert_error(post(web_down, body), 400, "body", "more than 32 parts")
    probe.join(TIMEOUT)
    assert health == [200]
    assert error["request_id"]


def test_oversize_fields_and_bodies_are_413(web_down):
    assert_error(post(web_down, form(("scene", b"t2t"), ("q", b"x" * (64 * 1024 + 1)))), 413, "q", "limit")
    assert_error(post(web_down, form(("scene", b"t2t"), ("junk", b"x" * (64 * 1024 + 1)))), 413, "junk", "limit")
    huge = requests.post(web_down.url + "/api/search", data=b"x" * (12 * 1024 * 1024),
                         headers={"Content-Type": MULTIPART}, timeout=TIMEOUT)
    assert_error(huge, 413, "body", "over the limit")
    assert_error(post(web_down, form(("scene", "é".encode("latin-1")), ("image", png()))), 400, "scene", "UTF-8")


def test_back_end_failures_say_nothing_about_the_topology(web_down):
    """Error bodies once named serving's address to anonymous clients."""
    for path, params in (("/api/search", {"scene": "t2t", "q": "json"}), ("/api/scenes", {})):
        response = get(web_down, path, **params)
        error = assert_error(response, 503, None, "search is temporarily unavailable; try again shortly")
        assert "127.0.0.1" not in response.text and "serving" not in response.text, response.text
        assert error["request_id"] == response.headers["X-Request-Id"]
        assert error["request_id"] in error["message"]
    ready = get(web_down, "/readyz")
    assert ready.status_code == 503 and "127.0.0.1" not in ready.text


def test_non_api_errors_carry_the_security_headers_and_405_its_allow(web_down):
    """A 404/405 outside /api once had no CSP or nosniff; the API's 405 lost its Allow header."""
    for response in (get(web_down, "/no/such/page"), requests.post(web_down.url + "/", timeout=TIMEOUT),
                     requests.delete(web_down.url + "/api/search", timeout=TIMEOUT)):
        assert response.status_code in (404, 405), response.status_code
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Request-Id"]
        if response.status_code == 405:
            assert response.headers["Allow"], response.headers
    api_405 = requests.delete(web_down.url + "/api/search", timeout=TIMEOUT)
    assert set(api_405.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / ".git").mkdir(parents=True)
    (folder / "sub").mkdir()
    (folder / "cat.png").write_bytes(png())
    (folder / "sub" / "dog.jpg").write_bytes(png())          # a PNG named .jpg: typed by content
    (folder / "page.html").write_text("<script src='x.js'></script>")
    (folder / "x.js").write_text("alert(document.cookie)")
    (folder / "fake.png").write_text("<html><script>alert(1)</script></html>")
    (folder / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    (folder / ".git" / "config").write_text("[remote]\n\turl = https://user:token@example.com/x.git\n")
    (folder / ".env").write_text("SECRET=1")
    (tmp_path / "outside.png").write_bytes(png())
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    return folder


def test_image_folder_serves_images_only_never_dotfiles(image_folder):
    """/images/ once served .html, .js and .git/config (200) from the image folder."""
    with WebThread(web_settings("127.0.0.1:1", images_dir=image_folder)) as server:
        for name in ("cat.png", "sub/dog.jpg"):
            response = get(server, f"/images/{name}")
            assert response.status_code == 200 and response.content == png()
            assert response.headers["Content-Type"] == "image/png"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "attachment" not in response.headers.get("Content-Disposition", "")
        for name in ("page.html", "x.js", "fake.png", "drawing.svg"):
            response = get(server, f"/images/{name}")
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "application/octet-stream", name
            assert response.headers["Content-Disposition"] == "attachment", name
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        for name in (".git/config", ".env", "sub/../.env", "%2e%2e/outside.png", "link.png", "nope.png", "sub"):
            assert get(server, f"/images/{name}").status_code == 404, name


def test_the_longest_query_in_any_script_fits_the_request_line(web, stack_scene):
    """A 950-character CJK query (8.5 KB percent-encoded, within the 1,000-character limit) once got
    aiohttp's plain-text 400: its request lines stopped at 8,190 bytes."""
    for q in ("\u4e2d" * 950, "\U0001f600" * 1000):  # 9 and 12 bytes a character, percent-encoded
        response = get(web, "/api/search", scene=stack_scene.name, q=q,
                       user="\U0001f600" * web.settings.limits.user_id_chars)
        assert response.status_code == 200, response.text[:300]


def test_the_request_line_limit_holds_every_url_within_the_parameter_limits():
    limits = RequestLimits()
    four_bytes = "\U0001f600"
    worst = urlencode({"scene": "s" * 64, "q": four_bytes * limits.query_chars, "k": str(limits.top_k),
                       "user": four_bytes * limits.user_id_chars, "diversify": "false", "page_token": "A" * 2048,
                       "filter": "category:" + "x" * 200, "facet": "category"})
    line = f"GET /api/similar?{worst} HTTP/1.1"
    assert len(line) <= max_request_line_bytes(limits)
    assert max_request_line_bytes(RequestLimits(query_chars=5000)) > max_request_line_bytes(limits)
    assert max_request_line_bytes(RequestLimits(user_id_chars=1000)) > max_request_line_bytes(limits)


def _refusal_logs(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("aiohttp", "mmsearch.services.web"))
            and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("where", ["request line", "header"])
def test_an_over_long_request_line_or_header_is_a_json_400_logged_in_one_line(web_down, caplog, where):
    """Once aiohttp's plain-text 400 (echoing the line) and an ERROR traceback holding 8 KB of it."""
    over = max_request_line_bytes(web_down.settings.limits) + 1000
    with caplog.at_level(logging.INFO):
        if where == "request line":
            response = requests.get(web_down.url + "/api/search?scene=t2t&q=" + "%E4%B8%AD" * (over // 9),
                                    timeout=TIMEOUT)
        else:
            response = requests.get(web_down.url + "/api/scenes", headers={"X-Padding": "a" * over}, timeout=TIMEOUT)
    error = assert_error(response, 400, None, f"over the limit of {max_request_line_bytes(web_down.settings.limits)}")
    assert error["code"] == "request_too_long"
    assert "%E4" not in response.text and "aaaa" not in response.text  # the refused line is not echoed
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    (record,) = _refusal_logs(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert error["request_id"] == record.request_id
    assert "%E4" not in repr(record.__dict__) and "aaaa" not in repr(record.__dict__)


def test_the_user_limit_is_the_one_serving_reads():
    """Web capped user at a constant 128 of its own; MMSEARCH_MAX_USER_ID_CHARS is what serving refuses past."""
    with WebThread(web_settings("127.0.0.1:1", limits={"user_id_chars": 8})) as server:
        assert_error(get(server, "/api/search", scene="t2t", q="x", user="u" * 9), 400, "user", "at most 8")
