"""Query-tower inference behind one small interface.

Two real implementations of :class:`Encoder`:
- :class:`OnnxEncoder` (embedded default): onnxruntime in-process on
  ``REPO/NAME/1/model.onnx``; runs in its own threads (onnxruntime releases
  the GIL), as many as the batcher's calls in flight, each call using
  ``intra_op_threads`` (serving's default: 1, see its settings). With more
  intra-op threads, their spin-waiting is a setting: on (onnxruntime's
  default) it lowers latency at low load; off, it leaves the cores to the
  other stages under load.
- :class:`TritonEncoder` (cluster): model ``NAME`` on a Triton server over
  gRPC with ``tritonclient.grpc.aio``; input names and datatypes come from
  Triton's model metadata.

A :class:`services.serving.batching.MicroBatcher` sits in front of either, so
concurrent requests share one inference call.
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np

from services.common.artifacts import materialize
from services.serving.batching import Inputs

log = logging.getLogger(__name__)



class EncoderUnavailable(RuntimeError):
    """The inference backend cannot be reached (maps to gRPC UNAVAILABLE)."""


class EncoderInputError(ValueError):
    """The inputs do not fit the model (maps to gRPC INVALID_ARGUMENT)."""


class Encoder(Protocol):
    name: str

    async def infer(self, inputs: Inputs) -> np.ndarray:
        """Inputs with batch dimension n -> float32 embeddings [n, dim]."""

    async def ready(self) -> bool:
        """Whether the backend answers and the model is loaded."""

    async def close(self) -> None: ...


def model_folder(repository: str, name: str) -> str:
    return f"{str(repository).rstrip('/')}/{name}"


def read_manifest(repository: str, name: str) -> dict:
    """REPO/NAME/manifest.json (downloaded once when REPO is on S3)."""
    folder = materialize(model_folder(repository, name))
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot read the manifest of model {name!r} at {path}: {exc}") from None


_ORT_TYPES = {
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
    "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
}


class OnnxEncoder:
    """onnxruntime in-process on ``REPO/NAME/1/model.onnx`` (``concurrency`` calls at once, in its own threads)."""

    def __init__(self, repository: str, name: str, *, version: int = 1, intra_op_threads: int = 1,
                 concurrency: int = 1, allow_spinning: bool = True, single_query_threads: int | None = None,
                 alone: Callable[[], bool] = lambda: True):
        """``single_query_threads`` (None: same as ``intra_op_threads``; 0: one per core) runs a call
        of batch size 1 on a second session with that many threads when ``alone()`` says no other
        query is in flight: a lone query at low load, where spare cores cut its latency. Any other
        call (merged batches, or a batch of one while other queries are under way) runs on the
        ``intra_op_threads`` session, which leaves the other cores to the concurrent work and gives
        more throughput."""
        import onnxruntime as ort

        self.name = name
        path = Path(materialize(model_folder(repository, name))) / str(version) / "model.onnx"
        if not path.exists():
            raise FileNotFoundError(f"encoder {name!r}: no ONNX model at {path}")

        def session(threads: int, spinning: bool):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self._session = session(intra_op_threads, allow_spinning)
        single = intra_op_threads if single_query_threads is None else single_query_threads
        self._single = session(single, allow_spinning) if single != intra_op_threads else self._session
        self._inputs = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name
        self._alone = alone
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"onnx-{name}")

    def _run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = sorted(set(self._inputs) - set(inputs))
        if missing:
            raise EncoderInputError(f"model {self.name!r} needs inputs {missing}; got {sorted(inputs)}")
        feed = {k: np.ascontiguousarray(inputs[k], dtype=t) for k, t in self._inputs.items()}
        batch = next(iter(feed.values())).shape[0] if feed else 0
        session = self._single if batch == 1 and self._alone() else self._session
        return np.asarray(session.run([self._output], feed)[0], dtype=np.float32)

    async def infer(self, inputs: Inputs) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, inputs)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_TRITON_TYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}


def _triton_code(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


class TritonEncoder:
    """Model ``name`` on a Triton server, over gRPC (``tritonclient.grpc.aio``)."""

    CHANNEL_ARGS = [
        # Reconnect quickly after the server comes back (gRPC's default backoff grows to 2 minutes).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]

    def __init__(self, address: str, name: str, *, timeout_s: float = 5.0):
        from tritonclient.grpc.aio import InferenceServerClient

        self.name = name
        self.address = address
        self.timeout_s = timeout_s
        self._client = InferenceServerClient(address, channel_args=self.CHANNEL_ARGS)
        self._inputs: dict[str, np.dtype] | None = None
        self._output: str | None = None

    async def _metadata(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            meta = await self._client.get_model_metadata(self.name, client_timeout=self.timeout_s, as_json=True)
        except InferenceServerException as exc:
            raise EncoderUnavailable(f"Triton at {self.address}: model {self.name!r}: {exc.message()}") from None
        self._inputs = {i["name"]: _TRITON_TYPES.get(i["datatype"], np.float32) for i in meta["inputs"]}
        self._output = meta["outputs"][0]["name"]

    async def infer(self, inputs: Inputs) -> np.ndarray:
        from tritonclient.grpc.aio import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        if self._inputs is None:
            await self._metadata()
        assert self._inputs is not None and self._output is not None
        missing = sorted(set(self._inputs) - set(inputs))
        if missing:
            raise EncoderInputError(f"model {self.name!r} needs inputs {missing}; got {sorted(inputs)}")
        request = []
        for name, dtype in self._inputs.items():
            array = np.ascontiguousarray(inputs[name], dtype=dtype)
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        try:
            result = await self._client.infer(
                self.name, request, outputs=[InferRequestedOutput(self._output)], client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            code = _triton_code(exc)
            if "INVALID_ARGUMENT" in code:
                raise EncoderInputError(f"Triton model {self.name!r}: {exc.message()}") from None
            raise EncoderUnavailable(f"Triton at {self.address}: {code or 'error'}: {exc.message()}") from None
        return np.asarray(result.as_numpy(self._output), dtype=np.float32)

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.name, client_timeout=min(self.timeout_s, 1.0)))
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()
