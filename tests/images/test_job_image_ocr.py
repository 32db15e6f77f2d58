"""The CPU job image reads the text in images: ``mmsearch job prepare --ocr rapidocr`` run inside it.

The job images install the ``media`` extra (rapidocr with the PP-OCRv4 models
inside its wheel, opencv headless, PyAV; docker/jobs.Dockerfile). Prepare runs
the way the operator's Jobs run a stage: the image's entrypoint, its own
non-root user, a read-only root with a writable ``/tmp`` and a data volume,
over a folder holding an image of text drawn here; the corpus it writes holds
the drawn words in the image's ``ocr_text``, and no OCR run was skipped.
"""
from __future__ import annotations

import json

import pytest

from tests.support.containers import ContainerSpec, Mount, run_to_end
from tests.support.drawn_text import draw, fonts

pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(2400)]

SIGN = "Night pharmacy\nopen until midnight"


def test_prepare_reads_the_text_in_an_image_inside_the_job_image(engine, images, tmp_path):
    source, data, tmp = tmp_path / "source", tmp_path / "data", tmp_path / "tmp"
    for folder in (source, data, tmp):
        folder.mkdir()
    data.chmod(0o777)
    tmp.chmod(0o777)
    _, load = fonts()[0]
    draw(SIGN, load(32)).save(source / "sign.png")
    spec = ContainerSpec(name="prepare-ocr", image=images["jobs-cpu"], read_only=True,
                         args=["prepare", "--workdir", "/data/work", "--source-kind", "images", "--source", "/source",
                               "--ocr", "rapidocr", "--ocr-timeout", "600"],  # a loaded CI machine is slow
                         mounts=[Mount(source, "/source", read_only=True), Mount(data, "/data"), Mount(tmp, "/tmp")])
    code, output = run_to_end(engine, spec, tmp_path / "logs", timeout=900)
    assert code == 0, f"prepare --ocr rapidocr in {images['jobs-cpu']} exited with {code}:\n{output}"
    summary = json.loads(output.strip().splitlines()[-1])
    assert (summary["records"], summary["skips"]) == (1, {}), output
    (record,) = [json.loads(line) for line in (data / "work" / "corpus.jsonl").read_text().splitlines()]
    read = record["ocr_text"].lower()
    assert all(word in read for word in ("pharmacy", "midnight")), record
