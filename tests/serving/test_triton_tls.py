"""serving -> Triton over TLS: serving's TritonEncoder on a real tritonserver started with --grpc-use-ssl
(mutual TLS), with test certificates: a query is encoded over TLS; plaintext, a client without a
certificate and a server from another CA are refused; a rotated client certificate is picked up."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmsearch.services.runtime.tls import Tls
from mmsearch.services.serving.backends.encoders import TritonEncoder
from mmsearch.services.serving.errors import Unavailable
from tests.fixtures.triton import TritonServer, triton_repository
from tests.support.certs import Ca, swap_pair, write_pair
from tests.support.loops import eventually_async

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make("mmsearch test CA")


@pytest.fixture(scope="module")
def triton_tls(minilm_repo, tmp_path_factory, ca):
    """tritonserver serving "minilm" on a gRPC port that requires TLS and a client certificate of ``ca``."""
    work = tmp_path_factory.mktemp("triton-tls")
    files = write_pair(work / "certs", ca.leaf("triton"))
    server = TritonServer(triton_repository(Path(minilm_repo), ["minilm"], work / "repository"), work,
                          tls=files, mutual=True)
    server.start()
    yield server
    server.stop()


def inputs() -> dict[str, np.ndarray]:
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


async def test_a_query_is_encoded_over_mutual_tls(triton_tls, ca, tmp_path):
    client = write_pair(tmp_path, ca.leaf("serving"))
    encoder = TritonEncoder(f"localhost:{triton_tls.grpc_port}", "minilm", tls=Tls(**client.settings()))
    try:
        assert await encoder.ready()
        vector = await encoder.infer(inputs())
        assert vector.shape[0] == 1 and np.isfinite(vector).all()
        # a rotated client certificate: the client is built again and goes on working
        swap_pair(client, ca.leaf("serving, rotated"))
        await eventually_async(lambda: encoder._clients.current() and encoder._clients.reloads >= 1,
                               "the Triton client built again")
        assert (await encoder.infer(inputs())).shape == vector.shape
    finally:
        await encoder.close()


@pytest.mark.parametrize("case", ["plaintext", "no client certificate", "server of another CA"])
async def test_what_a_tls_triton_refuses(triton_tls, ca, tmp_path, case):
    if case == "plaintext":
        tls = Tls()
    elif case == "no client certificate":
        tls = Tls(ca_file=write_pair(tmp_path, ca.leaf()).ca)
    else:
        tls = Tls(**write_pair(tmp_path, Ca.make("other").leaf("serving")).settings())
    encoder = TritonEncoder(f"localhost:{triton_tls.grpc_port}", "minilm", tls=tls, timeout_s=3)
    try:
        assert not await encoder.ready()
        with pytest.raises(Unavailable, match="Triton at"):
            await encoder.infer(inputs())
    finally:
        await encoder.close()
