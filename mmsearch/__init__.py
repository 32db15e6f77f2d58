"""mmsearch: the console entry point (``mmsearch.cli``) and the generated gRPC contracts (``mmsearch.v1``)."""
