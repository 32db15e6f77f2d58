"""Searching a collection: the request the jobs' evaluate and serving's matcher both send, and its answer."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

Found = tuple[tuple[str, int, float], ...]
"""Per hit: (retriever, 1-based rank in that retriever's list, its score) for each retriever that found it."""


@dataclass(frozen=True)
class Matches:
    ids: np.ndarray            # int64 [n]
    scores: np.ndarray         # float32 [n]
    vectors: np.ndarray | None  # float32 [n, d]
    fields: Mapping[str, list] = dataclasses.field(default_factory=dict)  # output field -> one value per hit
    found_by: tuple[Found, ...] | None = None  # set by serving's match stage (one per hit)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions) -> "Matches":
        """These hits, in this order (``positions`` into this list)."""
        index = np.asarray(positions, dtype=np.int64)
        return Matches(self.ids[index], self.scores[index], None if self.vectors is None else self.vectors[index],
                       {name: [values[i] for i in index] for name, values in self.fields.items()},
                       None if self.found_by is None else tuple(self.found_by[i] for i in index))


def search_request(data, limit: int, *, metric: str, params: Mapping | None, with_vectors: bool,
                   anns_field: str = "vector", output_fields: Sequence[str] = (), expression: str = "") -> dict:
    """The keyword arguments of a ``search`` for every query of ``data``: the rows of vectors [n, d] on
    ``anns_field`` ``vector``, or texts on the BM25 ``sparse`` field. The field is always named: a
    collection with a BM25 field has two vector fields. ``expression`` is a compiled filter (serving's
    :mod:`mmsearch.services.serving.pipeline.filters`), ``output_fields`` the scalar fields to return."""
    if isinstance(data, np.ndarray) and data.dtype != object:
        data = np.asarray(data, dtype=np.float32).tolist()
    return {"data": list(data), "limit": int(limit), "anns_field": anns_field,
            "search_params": {"metric_type": metric, "params": dict(params or {})},
            "output_fields": (["vector"] if with_vectors else []) + list(output_fields), "filter": expression}


def matches(results, with_vectors: bool, output_fields: Sequence[str] = ()) -> list[Matches]:
    """One :class:`Matches` per query of a ``search`` answer (with the values of ``output_fields``)."""
    out = []
    for hits in results:
        ids = np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits))
        found = None
        if with_vectors:  # no hit: a [0, 0] array (the dimension is unknown, and reshape(0, -1) is refused)
            rows = [h["entity"]["vector"] for h in hits]
            found = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 0), np.float32)
        values = {name: [h["entity"].get(name) for h in hits] for name in output_fields}
        out.append(Matches(ids, scores, found, values))
    return out


def search(client, collection: str, vectors: np.ndarray, limit: int, *, metric: str = "IP",
           params: dict | None = None, with_vectors: bool = False, timeout: float | None = None) -> list[Matches]:
    """A blocking search of ``collection`` for every row of ``vectors`` (the request serving sends)."""
    request = search_request(vectors, limit, metric=metric, params=params, with_vectors=with_vectors)
    return matches(client.search(collection, timeout=timeout, **request), with_vectors)
