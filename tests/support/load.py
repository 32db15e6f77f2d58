"""Concurrent search load for fault tests: N threads searching in a loop, every outcome recorded.

``with SearchLoad(address, request, concurrency=8) as load:`` keeps
``concurrency`` blocking gRPC clients searching until the block ends (each
loop is bounded by ``max_requests``). Every answer is recorded as an
:class:`Outcome` (status code name, details, when), so a test can wait for a
failure after it kills a dependency (:meth:`SearchLoad.wait_failure`), wait
for every client to succeed again after the restart
(:meth:`SearchLoad.wait_recovered`), and check the errors seen on the way.

The requests carry no deadline of their own: serving's default deadline
applies, so every DEADLINE_EXCEEDED comes from serving (naming a stage). The
channel's own ``client_timeout`` is only a backstop: a call that hits it means
serving did not answer within its deadline at all (the jam of issue 13).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc


@dataclass(frozen=True)
class Outcome:
    code: str        # grpc.StatusCode name ("OK" for a result)
    details: str
    at: float        # time.monotonic() when the answer came


class SearchLoad:
    def __init__(self, address: str, request: retrieval_pb2.SearchRequest, *, concurrency: int = 8,
                 client_timeout: float = 15.0, max_requests: int = 100_000):
        self.address, self.request = address, request
        self.concurrency, self.client_timeout, self.max_requests = concurrency, client_timeout, max_requests
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _worker(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    return
                try:
                    stub.Search(self.request, timeout=self.client_timeout)
                    outcome = Outcome("OK", "", time.monotonic())
                except grpc.RpcError as exc:
                    outcome = Outcome(exc.code().name, exc.details() or "", time.monotonic())
                    time.sleep(0.05)  # a failing loop must not spin
                with self._lock:
                    self.outcomes.append(outcome)

    def __enter__(self) -> "SearchLoad":
        self._threads = [threading.Thread(target=self._worker, name=f"load-{i}", daemon=True)
                         for i in range(self.concurrency)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.client_timeout + 5)

    def since(self, start: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= start]

    def errors(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.code != "OK"]

    def _wait(self, done, timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return time.monotonic()
            time.sleep(0.05)
        with self._lock:
            last = self.outcomes[-5:]
        raise AssertionError(f"{what} within {timeout:.0f}s; last outcomes: {last}")

    def wait_failure(self, start: float, timeout: float = 30.0) -> float:
        """Block until some search that ended after ``start`` failed."""
        return self._wait(lambda: any(o.code != "OK" for o in self.since(start)), timeout,
                          "no search failed")

    def wait_recovered(self, start: float, timeout: float = 30.0) -> float:
        """Block until, after ``start``, ``2 * concurrency`` searches in a row succeeded."""
        def done() -> bool:
            recent = self.since(start)
            run = 0
            for outcome in reversed(recent):
                if outcome.code != "OK":
                    break
                run += 1
            return run >= 2 * self.concurrency

        return self._wait(done, timeout, "searches did not all succeed again")
