"""Offline indexing stages: prepare, export, encode, push-milvus, push-mongo, publish."""
