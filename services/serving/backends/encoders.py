"""Query-tower inference behind one small interface, and the pool serving keeps them in.

Two real implementations of :class:`Encoder`:
- :class:`OnnxEncoder` (embedded default): onnxruntime in-process on the
  exported tower's ``model.onnx`` (the version its manifest names, from the
  model repository); runs in its own threads (onnxruntime releases the GIL),
  as many as the batcher's calls in flight, each call using
  ``intra_op_threads`` (serving's default: 1, see its settings). With more
  intra-op threads, their spin-waiting is a setting: on (onnxruntime's
  default) it lowers latency at low load; off, it leaves the cores to the
  other stages under load.
- :class:`TritonEncoder` (cluster): model ``NAME`` on a Triton server over
  gRPC with ``tritonclient.grpc.aio``; input names and datatypes come from
  Triton's model metadata.

:class:`EncoderPool` creates each (backend, model) encoder once, for every
config version, with a :class:`~mmsearch.services.serving.backends.batching.MicroBatcher` in
front so concurrent requests share one inference call, and an
:class:`~mmsearch.services.serving.backends.inference_cache.InferenceCache` in front of that
(``MMSEARCH_INFERENCE_CACHE_QUERIES``; keyed by the model version the encoder was built from, which a
Triton encoder pins its requests to). The embedded encoder counts the CPU
seconds of its own threads' onnxruntime calls
(``mmsearch_serving_encoder_cpu_seconds_total``, by model: bench/search.py
splits serving's CPU per query under load with it). A lone query's call on the
event loop is not counted: reading the thread's CPU clock right after it made
a lone query 3% slower (5 interleaved runs), and that call's second intra-op
thread escaped the count anyway. Failures are
serving's backend errors: Unavailable (Triton down), BadInput (inputs that do
not fit the model), Mismatch (onnxruntime refusing the inputs: a deployment
mismatch).
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Mapping, Protocol

import numpy as np

from mmsearch.core import onnx
from mmsearch.core.channels import channel_options
from mmsearch.core.model_repository import ModelFolder, ModelManifest
from mmsearch.services.runtime import tracing
from mmsearch.services.runtime.tls import Reloading, Tls
from mmsearch.services.serving import metrics
from mmsearch.services.serving.backends.batching import Inputs, MicroBatcher
from mmsearch.services.serving.backends.inference_cache import InferenceCache
from mmsearch.services.serving.errors import BadInput, Mismatch, Unavailable

log = logging.getLogger(__name__)


class Encoder(Protocol):
    name: str

    async def infer(self, inputs: Inputs) -> np.ndarray:
        """Inputs with batch dimension n -> float32 embeddings [n, dim]."""

    async def ready(self) -> bool:
        """Whether the backend answers and the model is loaded."""

    async def close(self) -> None: ...


class OnnxEncoder:
    """onnxruntime in-process on one exported tower (``concurrency`` calls at once, in its own threads)."""

    def __init__(self, folder: ModelFolder, *, intra_op_threads: int = 1, concurrency: int = 1,
                 allow_spinning: bool = True, single_query_threads: int | None = None,
                 alone: Callable[[], bool] = lambda: True, lone_on_loop: bool = False):
        """``single_query_threads`` (None: same as ``intra_op_threads``; 0: one per core) runs a call
        of batch size 1 on a second session with that many threads when ``alone()`` says no other
        query is in flight: a lone query at low load, where spare cores cut its latency. Any other
        call (merged batches, or a batch of one while other queries are under way) runs on the
        ``intra_op_threads`` session, which leaves the other cores to the concurrent work and gives
        more throughput. ``lone_on_loop`` runs that lone call on the calling (event loop) thread
        instead of this encoder's threads: no hand-off to a thread and back (the loop has nothing
        else to do meanwhile; a request that arrives during the call waits for it)."""
        self.name = folder.manifest.name
        path = folder.onnx_path
        self._session = onnx.session(path, intra_op_threads=intra_op_threads, spinning=allow_spinning)
        single = intra_op_threads if single_query_threads is None else single_query_threads
        self._single = (onnx.session(path, intra_op_threads=single, spinning=allow_spinning)
                        if single != intra_op_threads else self._session)
        self._inputs = onnx.input_types(self._session)
        output = self._session.get_outputs()[0]
        self._output = output.name
        # Outputs bound to a buffer of ours (IOBinding) where the tower gives float32 rows of a fixed width:
        # no per-call output allocation and conversion in onnxruntime (bench/sessions.py: a lone query faster)
        width = output.shape[-1] if output.shape else None
        self._width = width if isinstance(width, int) and output.type == "tensor(float)" else None
        self._alone = alone
        self._lone_on_loop = lone_on_loop
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"onnx-{self.name}")
        self._cpu = metrics.ENCODER_CPU.labels(self.name)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        try:
            feed = onnx.feed(self._inputs, inputs)
        except KeyError as exc:
            raise BadInput(f"model {self.name!r}: {exc.args[0]}") from None
        batch = next(iter(feed.values())).shape[0] if feed else 0
        session = self._single if batch == 1 and self._alone() else self._session
        try:
            if self._width is None:
                return np.asarray(session.run([self._output], feed)[0], dtype=np.float32)
            out = np.empty((batch, self._width), dtype=np.float32)
            binding = session.io_binding()
            for name, value in feed.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(self._output, "cpu", 0, np.float32, out.shape, out.ctypes.data)
            session.run_with_iobinding(binding)
            return out
        except Exception as exc:  # onnxruntime refuses inputs of the wrong shape: a model/input mismatch
            raise Mismatch(f"onnxruntime, model {self.name!r}: {type(exc).__name__}: {exc}") from None

    def _counted(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`_run` on one of this encoder's threads, its CPU seconds counted."""
        started = time.thread_time()
        try:
            return self._run(inputs)
        finally:
            self._cpu.inc(time.thread_time() - started)

    async def infer(self, inputs: Inputs) -> np.ndarray:
        if self._lone_on_loop and self._alone() and next(iter(inputs.values())).shape[0] == 1:
            return self._run(inputs)  # not counted: see the module doc
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._counted, inputs)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_TRITON_TYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}


def _triton_code(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


async def _close_after(client, grace: float) -> None:
    """Close a replaced Triton client once the calls it carries are past their deadline (``grace``)."""
    await asyncio.sleep(grace)
    await client.close()


class TritonEncoder:
    """Model ``name`` on a Triton server, over gRPC (``tritonclient.grpc.aio``)."""

    def __init__(self, address: str, name: str, *, timeout_s: float = 5.0, tls: Tls | None = None,
                 model_version: int | None = None):
        """``model_version``: ask Triton for that version of the model only (None: the one Triton chooses)."""
        from tritonclient.grpc.aio import InferenceServerClient

        self.name = name
        self.model_version = "" if model_version is None else str(model_version)
        self.address = address
        self.timeout_s = timeout_s
        # TLS when tls.ca_file is set (creds: Triton's --grpc-use-ssl port); built again when the files change.
        self._clients = Reloading(tls, lambda creds: InferenceServerClient(address, creds=creds,
                                                                           channel_args=channel_options()),
                                  _close_after, grace=timeout_s)
        self._inputs: dict[str, np.dtype] | None = None
        self._output: str | None = None

    async def _metadata(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            meta = await self._clients.current().get_model_metadata(self.name, self.model_version,
                                                                    client_timeout=self.timeout_s, as_json=True)
        except InferenceServerException as exc:
            raise Unavailable(f"Triton at {self.address}: model {self.name!r}: {exc.message()}") from None
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
            raise BadInput(f"model {self.name!r} needs inputs {missing}; got {sorted(inputs)}")
        request = []
        for name, dtype in self._inputs.items():
            array = np.ascontiguousarray(inputs[name], dtype=dtype)
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        try:
            result = await self._clients.current().infer(
                self.name, request, outputs=[InferRequestedOutput(self._output)], client_timeout=self.timeout_s,
                headers=tracing.headers(),  # the trace context, for Triton's own spans (None while tracing is off)
            )
        except InferenceServerException as exc:
            code = _triton_code(exc)
            if "INVALID_ARGUMENT" in code:
                raise BadInput(f"Triton model {self.name!r}: {exc.message()}") from None
            raise Unavailable(f"Triton at {self.address}: {code or 'error'}: {exc.message()}") from None
        return np.asarray(result.as_numpy(self._output), dtype=np.float32)

    async def ready(self) -> bool:
        try:
            return bool(await self._clients.current().is_model_ready(self.name, self.model_version,
                                                                     client_timeout=min(self.timeout_s, 1.0)))
        except Exception:
            return False

    async def close(self) -> None:
        await self._clients.close()


class BatchedEncoder:
    """An :class:`Encoder` behind a micro-batcher, and an inference cache in front of it: ``infer`` of one query
    is answered from the cache or shares calls with concurrent ones."""

    def __init__(self, encoder: Encoder, batcher: MicroBatcher, backend: str, cache: InferenceCache | None = None):
        self.name = encoder.name
        self.backend = backend
        self.cache = cache
        self._encoder, self._batcher = encoder, batcher

    async def infer(self, inputs: Inputs) -> np.ndarray:
        key = self.cache.key(inputs) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        out = np.asarray(await self._batcher.submit(inputs), dtype=np.float32)
        if key is not None:
            self.cache.put(key, out)
        return out

    async def ready(self) -> bool:
        return await self._encoder.ready()

    async def close(self) -> None:
        await self._batcher.close()
        await self._encoder.close()


def model_version(manifest: ModelManifest) -> str:
    """What a model version is for the inference cache: the manifest's version folder and ONNX hash. Pure."""
    return f"{manifest.model_version}:{manifest.onnx_sha256}"


class EncoderPool:
    """Creates each (backend, model) encoder once and keeps it for every config version.

    ``folder(model)`` gives the exported tower's folder (the model repository);
    ``alone()`` tells the embedded encoder whether a query runs with no other
    in flight (see :class:`OnnxEncoder`).
    """

    def __init__(self, settings, folder: Callable[[str], ModelFolder], alone: Callable[[], bool],
                 manifest: Callable[[str], Awaitable[ModelManifest]] | None = None):
        """``manifest(model)``: the manifest activation checks (default: the folder's)."""
        self._settings = settings
        self._folder = folder
        self._manifest = manifest
        self._alone = alone
        self._encoders: dict[tuple[str, str], BatchedEncoder] = {}
        self.handed = 0  # encoders handed out by get, counted (see release)
        self.created = 0  # encoders created (an onnxruntime session or a Triton client each), counted
        self._handed_at: dict[tuple[str, str], int] = {}

    def keys(self) -> set[tuple[str, str]]:
        return set(self._encoders)

    def handed_at(self, key: tuple[str, str]) -> int:
        """The count of hand-outs when ``key`` was last handed out."""
        return self._handed_at.get(key, 0)

    async def release(self, key: tuple[str, str]) -> None:
        """Close and forget the ``key`` encoder (the caller knows nothing uses it); a later get creates it again."""
        encoder = self._encoders.pop(key, None)
        if encoder is not None:
            await encoder.close()

    async def get(self, backend: str, model: str) -> BatchedEncoder:
        key = (backend, model)
        self.handed += 1
        self._handed_at[key] = self.handed
        if key not in self._encoders:
            s = self._settings
            if self._manifest is not None:
                manifest = await self._manifest(model)
            else:
                manifest = (await asyncio.to_thread(self._folder, model)).manifest
            if backend == "triton":
                if not s.triton_address:
                    raise Mismatch(f"encoder {model!r} uses backend triton but MMSEARCH_TRITON_ADDRESS is empty")
                encoder: Encoder = TritonEncoder(s.triton_address, model, timeout_s=s.timing.encoder_timeout_seconds,
                                                 tls=s.tls, model_version=manifest.model_version)
                if not await encoder.ready():
                    await encoder.close()
                    raise Unavailable(f"Triton at {s.triton_address} does not have version {manifest.model_version} "
                                      f"of model {model!r} ready")
            else:
                folder = await asyncio.to_thread(self._folder, model)
                manifest = folder.manifest  # the file the session runs
                encoder = await asyncio.to_thread(
                    OnnxEncoder, folder, intra_op_threads=s.onnx.intra_op_threads, concurrency=s.batching.in_flight,
                    single_query_threads=s.onnx.single_query_threads, alone=self._alone, lone_on_loop=True)
            batcher = MicroBatcher(encoder.infer, max_size=s.batching.max_size, max_wait_s=s.batching.max_wait_seconds,
                                   in_flight=s.batching.in_flight, on_batch=metrics.BATCH_SIZE.labels("embed", model).observe)
            cache = InferenceCache(model, model_version(manifest), s.inference_cache_queries)
            self._encoders[key] = BatchedEncoder(encoder, batcher, backend, cache if s.inference_cache_queries else None)
            self.created += 1
            log.info("encoder %s (%s) created", model, backend)
        return self._encoders[key]

    async def close(self) -> None:
        for encoder in self._encoders.values():
            await encoder.close()
        self._encoders.clear()


def encoder_dependency(model: str, backend: str) -> str:
    """The name the probe reports an encoder under."""
    return f"encoder {model} ({backend})"
