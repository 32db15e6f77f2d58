"""Benchmark of the preprocess service (figures and ratios, not a test).

Starts a real ``mmsearch serve preprocess`` process on 127.0.0.1 and measures,
in the same run:
- loopback RTT baseline: a grpc.health.v1 Check;
- tokenization, batch 1 and 64: the gRPC Tokenize round trip next to
  transformers' AutoTokenizer called in-process (the target for one short
  query: round trip < 2 x (in-process tokenizer + loopback RTT));
- images/s for 224x224 outputs from 640x480 JPEGs: transformers'
  CLIPImageProcessor in-process (decode included), this repo's Pillow+numpy
  processor in-process on one thread, and the gRPC PreprocessImages round
  trip (batch 64, the service's image threads).

Run: ``.venv/bin/python bench/preprocess.py``
"""
from __future__ import annotations

import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from PIL import Image  # noqa: E402

from mmsearch.core.channels import message_options  # noqa: E402
from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc  # noqa: E402
from mmsearch.core.image_preprocessing import ImageProcessor, decode  # noqa: E402
from tests.support.processes import start_service, wait_serving  # noqa: E402
from tests.preprocess import model_folders  # noqa: E402
from tests.preprocess.samples import encoded, varied_texts  # noqa: E402

QUERY = "red running shoes for women"


def timed(fn, repeat: int, warmup: int = 20) -> tuple[float, float]:
    """(median, p90) seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f} ms"


def main() -> None:
    from transformers import AutoTokenizer, CLIPImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    repo = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    model_folders.minilm(repo / "minilm")
    model_folders.clip_image(repo / "clip-image")
    models = {"minilm": str(repo / "minilm"), "clip-image": str(repo / "clip-image")}
    service = start_service("preprocess", {"MMSEARCH_MODELS": json.dumps(models)})
    try:
        wait_serving(service.target)
        channel = grpc.insecure_channel(service.target, options=message_options())
        stub = preprocess_pb2_grpc.PreprocessServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        reference = AutoTokenizer.from_pretrained(repo / "minilm")
        short = [t for t in varied_texts(2000) if 0 < len(t) < 80][:64]

        print(f"device: {os.cpu_count()} CPU cores; service: {service.target}")
        rtt, rtt90 = timed(lambda: health.Check(health_pb2.HealthCheckRequest()), 2000)
        print(f"loopback RTT (health Check)           median {ms(rtt)}  p90 {ms(rtt90)}")
        for texts in ([QUERY], short):
            request = preprocess_pb2.TokenizeRequest(model="minilm", texts=texts)
            local, local90 = timed(lambda: reference(texts, padding=True, truncation=True, return_tensors="np"), 2000)
            remote, remote90 = timed(lambda: stub.Tokenize(request), 2000)
            print(f"tokenize batch {len(texts):>2}: transformers in-process median {ms(local)}  p90 {ms(local90)}")
            print(f"tokenize batch {len(texts):>2}: gRPC round trip         median {ms(remote)}  p90 {ms(remote90)}")
            print(f"tokenize batch {len(texts):>2}: round trip / in-process = {remote / local:5.2f}x; "
                  f"round trip / (in-process + RTT) = {remote / (local + rtt):5.2f}x (target < 2)")

        jpegs = [encoded("RGB", 640, 480, "JPEG", seed=i) for i in range(64)]
        hf = CLIPImageProcessor.from_pretrained(repo / "clip-image")
        mine = ImageProcessor.from_folder(repo / "clip-image")
        hf_s, _ = timed(lambda: hf(images=[Image.open(io.BytesIO(b)) for b in jpegs], return_tensors="np"), 5, 1)
        mine_s, _ = timed(lambda: mine.process([decode(b, i, 1 << 30, 1 << 30) for i, b in enumerate(jpegs)]), 5, 1)
        request = preprocess_pb2.PreprocessImagesRequest(model="clip-image", images=jpegs)
        grpc_s, _ = timed(lambda: stub.PreprocessImages(request), 5, 1)
        print("images 640x480 JPEG -> 3x224x224, batch 64 (decode included):")
        print(f"  CLIPImageProcessor in-process       {64 / hf_s:8.1f} images/s")
        print(f"  Pillow+numpy in-process, 1 thread   {64 / mine_s:8.1f} images/s  ({hf_s / mine_s:4.2f}x)")
        print(f"  gRPC PreprocessImages round trip    {64 / grpc_s:8.1f} images/s  ({hf_s / grpc_s:4.2f}x)")
        channel.close()
    finally:
        service.stop()


if __name__ == "__main__":
    main()
