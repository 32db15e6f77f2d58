"""The JSON API's OpenAPI 3.1 document: kept current in docs/, served at /openapi.json, the same routes,
methods and parameters as the application and params.py, and schemathesis against the live web service
(real serving behind it): no 5xx, every response as documented, negative cases answered with a documented 4xx."""
from __future__ import annotations

import ast
import inspect
import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from mmsearch.core.limits import RequestLimits
from mmsearch.dev import openapi_doc
from mmsearch.dev.processes import free_port
from mmsearch.services.web import params
from mmsearch.services.web.app import FORM_FIELDS, create_app, max_token_chars
from mmsearch.services.web.openapi import FORM_PARAMETERS, SEARCH_PARAMETERS, SIMILAR_PARAMETERS, document
from tests.support.web import TIMEOUT, WebThread, assert_error, web_settings

DOCUMENT = json.loads(openapi_doc.OUTPUT.read_text())
MAX_EXAMPLES = 40


def test_the_document_in_docs_is_current_and_valid():
    assert openapi_doc.OUTPUT.read_text() == openapi_doc.render(), (
        f"{openapi_doc.OUTPUT} is stale: run `{openapi_doc.COMMAND}` (or `make docs`) and commit it")
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


@pytest.mark.parametrize("images", [False, True])
def test_the_documented_routes_are_the_applications(tmp_path, images):
    settings_ = web_settings("127.0.0.1:1", images_dir=tmp_path if images else None)
    routes = {(route.resource.canonical, route.method.lower()) for route in create_app(settings_).router.routes()
              if route.method != "HEAD" and not route.resource.canonical.startswith("/static")}
    routes = {(path.replace("{path:.+}", "{path}"), method) for path, method in routes}
    doc = document(settings_.limits, max_token_chars=max_token_chars(100), images=images)
    documented = {(path, method) for path, operations in doc["paths"].items() for method in operations}
    assert documented == routes  # the static files (the page's script and style) aside


def _strings_read(function, receiver: str) -> set[str]:
    """The names ``function`` reads with ``receiver.get("name")`` and ``values_of(receiver, "name")``."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(function))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        callee = node.func
        if isinstance(callee, ast.Attribute) and callee.attr == "get" and getattr(callee.value, "id", "") == receiver:
            names.add(node.args[0].value)
        elif isinstance(callee, ast.Name) and callee.id == "values_of":
            names.add(node.args[1].value)
    return names


def test_the_documented_parameters_are_those_the_handlers_read():
    assert _strings_read(params.parse_search, "params") == set(SEARCH_PARAMETERS) | set(SIMILAR_PARAMETERS)
    assert set(FORM_FIELDS) == set(FORM_PARAMETERS)
    form = DOCUMENT["components"]["schemas"]["ImageSearchForm"]["properties"]
    assert set(form) == set(FORM_FIELDS) | {"image"}
    body = DOCUMENT["components"]["schemas"]["FeedbackRequest"]
    assert _strings_read(params.parse_feedback, "data") == set(body["properties"])
    assert set(body["properties"]["event"]["enum"]) == set(params.FEEDBACK_EVENTS)
    for path, names in (("/api/search", SEARCH_PARAMETERS), ("/api/similar", SIMILAR_PARAMETERS)):
        refs = [p["$ref"].rsplit("/", 1)[1] for p in DOCUMENT["paths"][path]["get"]["parameters"]]
        assert refs == list(names)


def test_every_api_operation_documents_keys_and_their_refusals():
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert {"400", "401", "403", "429", "503"} <= set(operation["responses"]), (path, method)
                assert {"bearer": []} in operation["security"] and {"apiKey": []} in operation["security"]
            else:
                assert "security" not in operation and "401" not in operation["responses"]


def test_each_limit_is_the_settings(web):
    served = requests.get(web.url + "/openapi.json", timeout=TIMEOUT)
    assert served.status_code == 200 and served.headers["X-Request-Id"]
    limits = web.settings.limits
    assert served.json() == document(limits, max_token_chars=max_token_chars(limits.top_k))
    parameters = served.json()["components"]["parameters"]
    assert parameters["k"]["schema"]["maximum"] == limits.top_k
    assert parameters["q"]["schema"]["maxLength"] == limits.query_chars
    assert parameters["filter"]["schema"]["maxItems"] == params.MAX_FILTERS
    assert document(RequestLimits(top_k=7), max_token_chars=1)["components"]["parameters"]["k"]["schema"][
        "maximum"] == 7


@pytest.fixture(scope="module")
def keyless_web(tmp_path_factory):
    """A web service that takes no anonymous caller (its key file is empty) and no serving behind it."""
    keys = tmp_path_factory.mktemp("openapi-keys") / "keys.jsonl"
    keys.write_text("")
    with WebThread(web_settings(f"127.0.0.1:{free_port()}", access={"api_keys_file": keys,
                                                                       "anonymous_scenes": ""})) as server:
        yield server


def test_the_document_and_the_page_are_public_when_the_api_needs_keys(keyless_web):
    assert requests.get(keyless_web.url + "/openapi.json", timeout=TIMEOUT).status_code == 200
    assert_error(requests.get(keyless_web.url + "/api/scenes", timeout=TIMEOUT), 401, None, "an API key is required")


schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(modes=list(schemathesis.GenerationMode), max_examples=MAX_EXAMPLES,
                                deterministic=True)
# Checks on every case: no 5xx, status, content type, headers and body as documented, negative data refused
# with a documented 4xx, methods the path does not take answered 405.
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_headers_conformance,
          schemathesis.checks.response_schema_conformance, schemathesis.checks.negative_data_rejection]


@pytest.mark.slow
@schema.exclude(path="/").exclude(path="/api/documents").parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_live_service_answers_as_documented(case, web):
    """(``/api/documents`` needs a writer behind web: tests/web/test_api_documents.py runs it there.)"""
    case.call_and_validate(base_url=web.url, checks=CHECKS, timeout=TIMEOUT)


@pytest.mark.slow
@schema.include(path_regex="^/api/").parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_refusals_of_a_service_that_needs_keys_are_as_documented(case, keyless_web):
    response = case.call_and_validate(base_url=keyless_web.url, checks=CHECKS, timeout=TIMEOUT)
    assert response.status_code in (400, 401, 405, 413, 415), response.text
