"""Query-tower inference behind one small interface, and an async micro-batcher.

Two real implementations of :class:`Encoder`:
- :class:`OnnxEncoder` (embedded default): onnxruntime in-process on
  ``REPO/NAME/1/model.onnx``; runs in one dedicated thread (onnxruntime
  releases the GIL and uses its own intra-op threads).
- :class:`TritonEncoder` (cluster): model ``NAME`` on a Triton server over
  gRPC with ``tritonclient.grpc.aio``; input names and datatypes come from
  Triton's model metadata.

:class:`MicroBatcher` sits in front of either: concurrent requests queue, and
each inference call takes everything queued (up to ``max_size``) — so a lone
request pays no added wait, and under load requests share one call. Inputs of
different shapes (token sequences of different lengths) are right-padded with
zeros to the longest; with the attention mask at 0 on padding this leaves
each row's embedding unchanged (mean pooling masks padding; CLIP's text
tower is causal, so padding after the end is never attended).
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Protocol, Sequence

import numpy as np

from services.common.artifacts import materialize

log = logging.getLogger(__name__)

Inputs = Mapping[str, np.ndarray]


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


def pad_and_stack(items: Sequence[Inputs]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate per-request inputs along the batch axis, zero-padding other axes to the longest.

    Returns the batch and each item's row count (to split the outputs).
    """
    names = list(items[0])
    for item in items[1:]:
        if list(item) != names:
            raise EncoderInputError(f"inputs differ within a batch: {names} vs {list(item)}")
    counts = [int(next(iter(item.values())).shape[0]) for item in items]
    batch = {}
    for name in names:
        arrays = [np.asarray(item[name]) for item in items]
        ndim = arrays[0].ndim
        if any(a.ndim != ndim for a in arrays):
            raise EncoderInputError(f"input {name!r} has different ranks within a batch")
        target = [max(a.shape[d] for a in arrays) for d in range(1, ndim)]
        padded = []
        for a in arrays:
            pad = [(0, 0)] + [(0, t - s) for t, s in zip(target, a.shape[1:])]
            padded.append(np.pad(a, pad) if any(p[1] for p in pad) else a)
        batch[name] = np.concatenate(padded, axis=0) if len(padded) > 1 else padded[0]
    return batch, counts


@dataclass
class _Pending:
    inputs: Inputs
    future: asyncio.Future


class MicroBatcher:
    """Shares inference calls among concurrent requests (see module doc)."""

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], Awaitable[np.ndarray]],
        *,
        max_size: int = 32,
        max_wait_s: float = 0.0,
        in_flight: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._run = run
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.in_flight = in_flight
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._workers: list[asyncio.Task] = []

    def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.in_flight)]

    async def submit(self, inputs: Inputs) -> np.ndarray:
        """Embeddings for ``inputs`` (batch dimension n -> [n, dim])."""
        if self._queue is None:
            self._start()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        rows = lambda: sum(int(next(iter(p.inputs.values())).shape[0]) for p in batch)  # noqa: E731
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while rows() < self.max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _worker(self) -> None:
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]
            if not batch:
                continue
            try:
                inputs, counts = pad_and_stack([p.inputs for p in batch])
                if self._on_batch:
                    self._on_batch(sum(counts))
                out = await self._run(inputs)
                if out.shape[0] != sum(counts):
                    raise RuntimeError(f"the encoder returned {out.shape[0]} rows for {sum(counts)} inputs")
            except Exception as exc:  # every waiter of this batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p, n in zip(batch, counts):
                if not p.future.done():
                    p.future.set_result(out[start:start + n])
                start += n

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers, self._queue = [], None


_ORT_TYPES = {
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
    "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
}


class OnnxEncoder:
    """onnxruntime in-process on ``REPO/NAME/1/model.onnx`` (one inference at a time, in its own thread)."""

    def __init__(self, repository: str, name: str, *, version: int = 1, intra_op_threads: int = 0):
        import onnxruntime as ort

        self.name = name
        path = Path(materialize(model_folder(repository, name))) / str(version) / "model.onnx"
        if not path.exists():
            raise FileNotFoundError(f"encoder {name!r}: no ONNX model at {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"onnx-{name}")

    def _run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = sorted(set(self._inputs) - set(inputs))
        if missing:
            raise EncoderInputError(f"model {self.name!r} needs inputs {missing}; got {sorted(inputs)}")
        feed = {k: np.ascontiguousarray(inputs[k], dtype=t) for k, t in self._inputs.items()}
        return np.asarray(self._session.run([self._output], feed)[0], dtype=np.float32)

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
