"""What online services and offline jobs share: artifacts, the model repository, onnxruntime
sessions, the Milvus store, tokenizers, CLIP image preprocessing, the tensor codec, request
limits, settings and logging. Imports nothing above it (see the import contract in pyproject.toml)."""
