"""Milvus collections built by the jobs, and how online code finds them.

The URI picks the engine: a file path is Milvus Lite (the embedded default,
milvus-lite 2.5.1, C++ engine), ``http(s)://`` (or ``tcp://``, ``unix:``) a
Milvus server. Both go through pymilvus ``MilvusClient``.

The modules, read side first (serving imports only these; a forbidden
contract in pyproject.toml keeps it so):

- :mod:`.connection`: open and close a client, the one-line errors.
- :mod:`.names`: the names mmsearch gives (collections, their document
  collections, the registry, the per-row hash field). Pure.
- :mod:`.registry`: the registry collection as read: a collection's state
  and where an alias points (:func:`~.registry.resolve_collection`).
- :mod:`.record`: what a collection records (:class:`~.record.CollectionRecord`)
  and :func:`~.record.read_manifest`, what online code reads.
- :mod:`.search`: the search request and its answer (:class:`~.search.Matches`).

and the write side (the jobs):

- :mod:`.registry_writes`: state updates and the alias switch.
- :mod:`.schema`: the index a collection gets, creating it.
- :mod:`.rows`: upserting, deleting, counting and dropping rows.

Decisions that span them:

- A collection ``<scene>_<version>`` has ``id`` INT64 primary key,
  ``vector`` FLOAT_VECTOR[dim] and ``content_sha256`` VARCHAR: the hash of the
  corpus record the row was built from (``mmsearch.jobs.corpus.document_hash``), so
  ``sync`` can tell new, changed and removed documents from what a version
  holds; plus what its layout declares (:mod:`mmsearch.core.fields`): one
  scalar field per filterable field (with an INVERTED index) and, with BM25,
  ``text`` (VARCHAR, analyzer on) feeding ``sparse`` (SPARSE_FLOAT_VECTOR,
  Milvus's built-in BM25 function, SPARSE_INVERTED_INDEX). Every row is built
  by one function (``mmsearch.jobs.push_milvus.milvus_row``).
- Milvus Lite 2.5.1 answers UNIMPLEMENTED to every alias call (create_alias,
  alter_alias, describe_alias, list_aliases) and to alter_collection_properties.
  So mmsearch keeps a small registry collection, ``mmsearch_registry``
  (VARCHAR key, VARCHAR JSON value, a 2-d dummy vector because Milvus requires
  one), with ``alias:<scene>`` -> ``{"collection", "history", "native"}`` rows
  and ``collection:<name>`` -> the collection's state (:func:`.registry.read_state`:
  the record, ``complete`` and ``count``, the corpus fingerprint
  ``corpus_sha256``, the sync ``generation`` and its ``changed`` ids, the
  ``evaluation`` figures and the ``published`` gate decision). A one-row upsert
  is the atomic alias switch. On a Milvus server (and milvus-lite 3.x) the
  native alias is set first, and is the truth there:
  :func:`.registry.resolve_collection` follows it (so a move made by another
  tool is followed too); on Milvus Lite 2.5 the registry row is. Online code
  must call it (or :func:`.record.read_manifest`, which returns
  ``collection``) and search the concrete collection.
- One process at a time may open a Milvus Lite file (it holds a file lock); a
  second one is refused with a clear error.
"""
