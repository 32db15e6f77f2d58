"""Backends: the injected bundle and everything that talks to another process (encoders, preprocess, Milvus, MongoDB)."""
