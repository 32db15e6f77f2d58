"""A bounded concurrent search load against serving, recording every request's outcome and latency.

``with SearchLoad(address, scene, texts, threads=4) as load: ...`` keeps ``threads`` clients
searching (each one request at a time, so the load is bounded) until the block ends; ``load.mark()``
returns the index of the next sample, so a test can cut the run into phases (before, during, after
a publish) and read :meth:`p99_ms` and :attr:`failures` of each. Figures are reported, never asserted
(no timing thresholds in tests).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc


@dataclass
class Sample:
    at: float
    ms: float
    ids: tuple[int, ...]
    error: str = ""


@dataclass
class SearchLoad:
    address: str
    scene: str
    texts: list[str]
    threads: int = 4
    top_k: int = 5
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, offset: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            n = offset
            while not self._stop.is_set():
                text = self.texts[n % len(self.texts)]
                n += 1
                started = time.perf_counter()
                try:
                    response = stub.Search(retrieval_pb2.SearchRequest(scene=self.scene, text=text, top_k=self.top_k),
                                           timeout=10)
                    sample = Sample(time.monotonic(), (time.perf_counter() - started) * 1000,
                                    tuple(item.id for item in response.items))
                except grpc.RpcError as exc:
                    sample = Sample(time.monotonic(), (time.perf_counter() - started) * 1000, (),
                                    f"{exc.code().name}: {exc.details()}")
                with self._lock:
                    self.samples.append(sample)

    def __enter__(self) -> "SearchLoad":
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def mark(self) -> int:
        with self._lock:
            return len(self.samples)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """Block until at least ``count`` samples exist."""
        deadline = time.monotonic() + timeout
        while self.mark() < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def phase(self, start: int, end: int | None = None) -> list[Sample]:
        with self._lock:
            return list(self.samples[start:end])

    @property
    def failures(self) -> list[str]:
        with self._lock:
            return [s.error for s in self.samples if s.error]

    @staticmethod
    def p99_ms(samples: list[Sample]) -> float:
        ok = [s.ms for s in samples if not s.error]
        return float(np.percentile(ok, 99)) if ok else float("nan")
