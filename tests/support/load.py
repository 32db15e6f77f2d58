"""A bounded concurrent search load against serving, recording every request's outcome and latency.

``with SearchLoad(address, requests, concurrency=4) as load: ...`` keeps
``concurrency`` blocking gRPC clients searching (each one request at a time,
cycling through ``requests``, so the load is bounded) until the block ends.
Every answer is recorded as a :class:`Sample` (when, how long, status code
name, details, the ids found), so a test can:

- cut the run into phases (before, during, after a publish) with
  :meth:`mark` / :meth:`wait_for` / :meth:`phase` and read :meth:`p99_ms` of
  each (figures are reported, never asserted: no timing thresholds in tests);
- wait for a failure after it kills a dependency (:meth:`wait_failure`) and
  for every client to succeed again after the restart (:meth:`wait_recovered`),
  then check the errors seen on the way (:meth:`errors`, :attr:`failures`).

The requests carry no deadline of their own: serving's default deadline
applies, so every DEADLINE_EXCEEDED comes from serving (naming a stage). The
channel's ``client_timeout`` is only a backstop: a call that hits it means
serving did not answer within its deadline at all (a jam: tests/serving/test_summary_store.py).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

import grpc
import numpy as np

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.loops import NotReached, eventually


@dataclass(frozen=True)
class Sample:
    at: float                # time.monotonic() when the answer came
    ms: float
    code: str = "OK"         # grpc.StatusCode name
    details: str = ""
    ids: tuple[int, ...] = ()

    @property
    def error(self) -> str:
        return "" if self.code == "OK" else f"{self.code}: {self.details}"


def text_requests(scene: str, texts: Sequence[str], top_k: int = 5) -> list[retrieval_pb2.SearchRequest]:
    return [retrieval_pb2.SearchRequest(scene=scene, text=text, top_k=top_k) for text in texts]


class SearchLoad:
    def __init__(self, address: str, requests: retrieval_pb2.SearchRequest | Sequence[retrieval_pb2.SearchRequest], *,
                 concurrency: int = 4, client_timeout: float = 15.0):
        self.address = address
        self.requests = [requests] if isinstance(requests, retrieval_pb2.SearchRequest) else list(requests)
        self.concurrency, self.client_timeout = concurrency, client_timeout
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _worker(self, offset: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            n = offset
            while not self._stop.is_set():
                request = self.requests[n % len(self.requests)]
                n += 1
                started = time.perf_counter()
                try:
                    response = stub.Search(request, timeout=self.client_timeout)
                    sample = Sample(time.monotonic(), (time.perf_counter() - started) * 1000,
                                    ids=tuple(item.id for item in response.items))
                except grpc.RpcError as exc:
                    sample = Sample(time.monotonic(), (time.perf_counter() - started) * 1000,
                                    exc.code().name, exc.details() or "")
                    time.sleep(0.05)  # a failing loop must not spin
                with self._lock:
                    self.samples.append(sample)

    def __enter__(self) -> "SearchLoad":
        self._threads = [threading.Thread(target=self._worker, args=(i,), name=f"load-{i}", daemon=True)
                         for i in range(self.concurrency)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.client_timeout + 5)

    # ---- phases ---------------------------------------------------------------------------------
    def mark(self) -> int:
        """The index of the next sample."""
        with self._lock:
            return len(self.samples)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """Block until at least ``count`` samples exist."""
        eventually(lambda: self.mark() >= count, f"{count} searches answered", timeout=timeout)

    def phase(self, start: int, end: int | None = None) -> list[Sample]:
        with self._lock:
            return list(self.samples[start:end])

    @staticmethod
    def p99_ms(samples: list[Sample]) -> float:
        ok = [s.ms for s in samples if s.code == "OK"]
        return float(np.percentile(ok, 99)) if ok else float("nan")

    # ---- failures -------------------------------------------------------------------------------
    @property
    def failures(self) -> list[str]:
        return [s.error for s in self.errors()]

    def errors(self) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.code != "OK"]

    def since(self, start: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.at >= start]

    def _wait(self, done, timeout: float, what: str) -> float:
        try:
            eventually(done, what, timeout=timeout)
        except NotReached as exc:
            with self._lock:
                last = self.samples[-5:]
            raise AssertionError(f"{exc}; last outcomes: {last}") from None
        return time.monotonic()

    def wait_failure(self, start: float, timeout: float = 30.0) -> float:
        """Block until some search that ended after ``start`` failed."""
        return self._wait(lambda: any(s.code != "OK" for s in self.since(start)), timeout, "a search failing")

    def wait_recovered(self, start: float, timeout: float = 30.0) -> float:
        """Block until, after ``start``, ``2 * concurrency`` searches in a row succeeded."""
        def done() -> bool:
            run = 0
            for sample in reversed(self.since(start)):
                if sample.code != "OK":
                    break
                run += 1
            return run >= 2 * self.concurrency

        return self._wait(done, timeout, "searches all succeeding again")
