"""What ``prepare`` can read that the user does not bring: the built-in stdlib corpus and its labelled queries.

``stdlib.py`` collects the corpus (``--source-kind stdlib``; the demo's, and
the operator example's); ``stdlib_queries.jsonl`` labels it for ``evaluate``,
the demo's publish gate and ``bench/relevance.py`` (:data:`stdlib.QUERIES`).
"""
