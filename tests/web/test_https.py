"""Web over HTTPS (MMSEARCH_HTTPS) with test certificates, and web -> serving -> preprocess over mutual TLS
end to end on the real stack: what is refused, and a rotated certificate served without a restart."""
from __future__ import annotations

import socket
import ssl

import pytest
import requests

from mmsearch.dev.processes import free_port
from tests.support.certs import Ca, swap_pair, write_pair
from tests.support.loops import eventually
from tests.support.processes import wait_serving
from tests.support.stack import start_stack, t2t_config, write_config
from tests.support.web import WebThread, web_settings

TIMEOUT = 30


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make("mmsearch test CA")


def served_certificate(port: int, ca: bytes, client=None) -> bytes:
    """The certificate (DER) a new TLS connection to ``port`` is shown, checked against ``ca``."""
    context = ssl.create_default_context(cadata=ca.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
            return wrapped.getpeercert(binary_form=True)


def test_the_page_over_https_and_plaintext_refused(tmp_path, ca):
    files = write_pair(tmp_path, ca.leaf())
    settings = web_settings(f"127.0.0.1:{free_port()}", https=True, tls=files.settings())
    with WebThread(settings) as web:
        assert web.url.startswith("https://")
        page = requests.get(web.url + "/", verify=str(files.ca), timeout=TIMEOUT)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert requests.get(web.url + "/healthz", verify=str(files.ca), timeout=TIMEOUT).json() == {"status": "ok"}
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(web.url.replace("https://", "http://") + "/healthz", timeout=TIMEOUT)
        with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
            requests.get(web.url + "/healthz", verify=str(write_pair(tmp_path / "other", Ca.make("other").leaf()).ca),
                         timeout=TIMEOUT)
        # /metrics stays plaintext on its own, non-public port
        assert requests.get(web.metrics_url + "/metrics", timeout=TIMEOUT).status_code == 200


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path, ca):
    first, second = ca.leaf("first"), ca.leaf("second")
    files = write_pair(tmp_path, first)
    with WebThread(web_settings(f"127.0.0.1:{free_port()}", https=True, tls=files.settings())) as web:
        assert served_certificate(web.running.port, ca.pem) == ssl.PEM_cert_to_DER_cert(first.cert.decode())
        swap_pair(files, second)
        eventually(lambda: served_certificate(web.running.port, ca.pem) == ssl.PEM_cert_to_DER_cert(second.cert.decode()),
                   "web serving the rotated certificate")
        assert requests.get(web.url + "/healthz", verify=str(files.ca), timeout=TIMEOUT).status_code == 200


def test_client_certificates_required_with_client_auth(tmp_path, ca):
    files = write_pair(tmp_path / "server", ca.leaf())
    client = write_pair(tmp_path / "client", ca.leaf("client"))
    stranger = write_pair(tmp_path / "stranger", Ca.make("other").leaf("client"))
    settings = web_settings(f"127.0.0.1:{free_port()}", https=True, tls=files.settings(client_auth=True))
    with WebThread(settings) as web:
        url, verify = web.url + "/healthz", str(files.ca)
        for cert in (None, (str(stranger.cert), str(stranger.key))):
            with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
                requests.get(url, verify=verify, cert=cert, timeout=TIMEOUT)
        assert requests.get(url, verify=verify, cert=(str(client.cert), str(client.key)), timeout=TIMEOUT).ok


def test_https_needs_a_certificate():
    with pytest.raises(ValueError, match="MMSEARCH_HTTPS=true needs MMSEARCH_TLS_CERT_FILE"):
        web_settings("127.0.0.1:1", https=True)


@pytest.mark.slow
def test_search_over_mutual_tls_on_every_hop(tmp_path, ca, stdlib_index, service_loop):
    """web (HTTPS) -> serving -> preprocess, each port requiring a client certificate of the CA."""
    serving_files = write_pair(tmp_path / "serving", ca.leaf("serving"))
    web_files = write_pair(tmp_path / "web", ca.leaf("web"))
    repo = str(stdlib_index.repository)
    experiments = tmp_path / "experiments.yaml"
    write_config(experiments, t2t_config(stdlib_index.scene, model=stdlib_index.model))
    stack = start_stack(service_loop, models={stdlib_index.model: f"{repo}/{stdlib_index.model}"},
                        experiments=experiments, milvus_uri=str(stdlib_index.milvus_uri),
                        mongo_uri=stdlib_index.mongo_uri, model_repository=repo,
                        tls=serving_files.settings(client_auth=True))
    try:
        for port in (stack.serving.port, stack.preprocess_port):  # both ports refuse plaintext
            with pytest.raises(TimeoutError):
                wait_serving(f"127.0.0.1:{port}", timeout=1)
        plain = web_settings(stack.address)  # a web that calls serving in plaintext is refused
        with WebThread(plain) as web:
            assert requests.get(web.url + "/readyz", timeout=TIMEOUT).status_code == 503
        settings = web_settings(stack.address, https=True, tls=web_files.settings(client_auth=False))
        with WebThread(settings) as web:
            verify = str(web_files.ca)
            assert requests.get(web.url + "/readyz", verify=verify, timeout=TIMEOUT).status_code == 200
            found = requests.get(web.url + "/api/search", params={"scene": stdlib_index.scene,
                                                                  "q": "write rows to a csv file"},
                                 verify=verify, timeout=TIMEOUT)
            assert found.status_code == 200, found.text
            assert found.json()["items"], found.text
    finally:
        stack.close()
