"""mmsearch job encode: search quality on stdlib docs, image corpora, crash safety, sharding, bad input."""
from __future__ import annotations

import functools
import http.server
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmsearch.jobs import parity
from mmsearch.jobs.app import job_app
from mmsearch.jobs.encode import TextInputs, encode, load_encoder, parse_shard, read_vectors
from mmsearch.jobs.errors import JobError
from tests.support.jobs import job_killed_after

STDLIB_MODULES = ("csv", "json", "shutil", "re", "hashlib", "datetime", "sqlite3", "gzip", "zipfile", "base64",
                  "socket", "random", "uuid", "tempfile", "argparse")
QUERIES = {"how do I read and write CSV files": "csv", "serialize objects to JSON": "json",
           "copy or remove a whole directory tree": "shutil", "compute a SHA-256 digest": "hashlib",
           "open a SQLite database": "sqlite3", "compress a file with gzip": "gzip"}


def run_cli(*args: str):
    import mmsearch.jobs.cli  # noqa: F401

    return CliRunner().invoke(job_app, list(args))


def write_corpus(workdir: Path, records: list[dict]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def all_vectors(workdir) -> tuple[np.ndarray, np.ndarray]:
    total, chunks = read_vectors(str(workdir))
    ids, vectors = zip(*chunks)
    ids, vectors = np.concatenate(ids), np.concatenate(vectors)
    assert len(ids) == total
    return ids, vectors


@pytest.fixture(scope="module")
def stdlib_records() -> list[dict]:
    from mmsearch.jobs.sources.stdlib import collect

    return [{"question": d.name, "answer": d.summary, "category": d.top} for d in collect(STDLIB_MODULES)]


def test_encoded_query_finds_expected_stdlib_module(stdlib_records, minilm_repo, tmp_path):
    write_corpus(tmp_path, [{**r, "id": i} for i, r in enumerate(stdlib_records)])
    summary = encode(str(tmp_path), str(minilm_repo), "minilm", text_field="answer", chunk_size=200)
    ids, vectors = all_vectors(tmp_path)
    assert sorted(ids) == list(range(len(stdlib_records))) and summary["vectors"] == len(stdlib_records)
    assert vectors.dtype == np.float32 and vectors.shape[1] == 384
    encoder = load_encoder(str(minilm_repo), "minilm")
    tokenizer = TextInputs(encoder, "{answer}").tokenizer
    for query, module in QUERIES.items():
        input_ids, mask = tokenizer.encode([query])
        q = encoder.run({"input_ids": input_ids, "attention_mask": mask})[0]
        best = int(ids[int(np.argmax(vectors @ q))])
        assert stdlib_records[best]["category"] == module, (query, stdlib_records[best]["question"])
    # a rerun finds everything done
    assert encode(str(tmp_path), str(minilm_repo), "minilm", text_field="answer", chunk_size=200)["chunks_written"] == 0


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    """A folder of generated images (one corrupt) served by http.server on 127.0.0.1, port 0."""
    folder = tmp_path_factory.mktemp("images")
    for i, image in enumerate(parity.varied_images(12, seed=3)):
        image.convert("RGB").save(folder / f"img{i}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_corpus_over_http_file_and_path(image_server, tiny_clip_repo, tmp_path):
    folder, base = image_server
    records = [{"id": 100 + i, "name": f"img{i}.png",
                "url": [f"{base}/img{i}.png", (folder / f"img{i}.png").as_uri(), str(folder / f"img{i}.png")][i % 3]}
               for i in range(12)]
    records += [{"id": 500, "name": "corrupt.jpg", "url": f"{base}/corrupt.jpg"},
                {"id": 501, "name": "gone.png", "url": str(folder / "gone.png")}]
    write_corpus(tmp_path, records)
    result = run_cli("encode", "--workdir", str(tmp_path), "--repository", str(tiny_clip_repo),
                     "--model", "tiny-clip-image", "--batch-size", "5", "--chunk-size", "7")
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["failed"] == 2 and sorted(done["failed_ids"]) == [500, 501] and done["vectors"] == 12
    ids, vectors = all_vectors(tmp_path)
    assert sorted(ids) == [100 + i for i in range(12)]
    # each vector is the vision tower's output for that image, preprocessed like CLIPImageProcessor
    from transformers import CLIPImageProcessor

    import onnxruntime as ort

    images = [Image.open(folder / f"img{i}.png") for i in range(12)]
    pixels = CLIPImageProcessor.from_pretrained(str(tiny_clip_repo / "tiny-clip-image"))(images, return_tensors="np")["pixel_values"]
    session = ort.InferenceSession(str(tiny_clip_repo / "tiny-clip-image" / "1" / "model.onnx"))
    want = session.run(["embedding"], {"pixel_values": pixels.astype(np.float32)})[0]
    got = vectors[np.argsort(ids)]
    assert parity.compare(got, want)["min_cosine"] >= 0.9999


def test_sigkill_half_way_then_rerun_gives_exact_ids(minilm_repo, tmp_path):
    n = 2400
    write_corpus(tmp_path, [{"id": 7 * i + 3, "question": f"document number {i} about topic {i % 17}"} for i in range(n)])
    args = [sys.executable, "-m", "mmsearch.cli", "job", "encode", "--workdir", str(tmp_path), "--repository",
            str(minilm_repo), "--model", "minilm", "--chunk-size", "100", "--batch-size", "16", "--threads", "1"]
    # chunks of 100 in batches of 16: the first update past 200 documents (216) is the third chunk's first
    # batch, so the first two chunks are written and the third is not
    killed = job_killed_after(201, *args[4:])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finished = len(list((tmp_path / "vectors").glob("chunk-*.npz")))
    assert finished == 2
    with pytest.raises(JobError, match="chunks missing"):
        read_vectors(str(tmp_path))
    rerun = subprocess.run(args[:-2], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert done["chunks_skipped"] == finished and done["chunks_written"] == n // 100 - finished
    ids, vectors = all_vectors(tmp_path)
    assert sorted(ids.tolist()) == [7 * i + 3 for i in range(n)]  # exact: none missing, none twice
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_shards_split_the_work_and_join(tiny_multilingual_repo, tmp_path):
    write_corpus(tmp_path, [{"id": i, "question": f"text {i}"} for i in range(250)])
    outs = [encode(str(tmp_path), str(tiny_multilingual_repo), "tiny-multilingual", shard=f"{i}/3", chunk_size=40)
            for i in range(3)]
    assert [o["chunks_written"] for o in outs] == [3, 2, 2]  # 7 chunks: 0,3,6 | 1,4 | 2,5
    ids, _ = all_vectors(tmp_path)
    assert sorted(ids.tolist()) == list(range(250))
    assert parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "3"}) == (3, 4)


def test_a_template_embeds_several_fields_and_is_recorded(tiny_multilingual_repo, tmp_path):
    records = [{"id": i, "question": f"name {i}", "answer": f"what {i} does", "year": 2000 + i} for i in range(30)]
    write_corpus(tmp_path / "template", records)
    write_corpus(tmp_path / "rendered", [{"id": r["id"], "text": f"{r['question']}: {r['answer']} ({r['year']})"}
                                         for r in records])
    repo, model = str(tiny_multilingual_repo), "tiny-multilingual"
    encode(str(tmp_path / "template"), repo, model, text_template="{question}: {answer} ({year})", chunk_size=8)
    encode(str(tmp_path / "rendered"), repo, model, text_field="text", chunk_size=8)
    (ids, vectors), (same_ids, same) = all_vectors(tmp_path / "template"), all_vectors(tmp_path / "rendered")
    assert ids.tolist() == same_ids.tolist() and np.array_equal(vectors, same)
    meta = json.loads((tmp_path / "template" / "vectors" / "meta.json").read_text())
    assert meta["text_template"] == "{question}: {answer} ({year})"
    assert json.loads((tmp_path / "rendered" / "vectors" / "meta.json").read_text())["text_template"] == "{text}"
    # a rerun with the same template resumes; another template is other settings
    assert encode(str(tmp_path / "template"), repo, model, text_template="{question}: {answer} ({year})",
                  chunk_size=8)["chunks_written"] == 0
    with pytest.raises(JobError, match=r"other settings \(text_template differ"):
        encode(str(tmp_path / "template"), repo, model, text_template="{answer}", chunk_size=8)


def test_vectors_recorded_before_templates_resume_with_the_same_field(tiny_multilingual_repo, tmp_path):
    write_corpus(tmp_path, [{"id": i, "answer": f"text {i}"} for i in range(20)])
    encode(str(tmp_path), str(tiny_multilingual_repo), "tiny-multilingual", text_field="answer", chunk_size=5)
    meta_path = tmp_path / "vectors" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["text_field"] = meta.pop("text_template").strip("{}")  # as encode wrote it before templates
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "vectors" / "chunk-000003-5.npz").unlink()
    done = encode(str(tmp_path), str(tiny_multilingual_repo), "tiny-multilingual", text_field="answer", chunk_size=5)
    assert (done["chunks_written"], done["chunks_skipped"]) == (1, 3)


@pytest.mark.parametrize("args, message", [
    (["--text-template", "{question}: {answer}"],
     "error: record id 1: no text in field 'answer', which the text template '{question}: {answer}' embeds"),
    (["--text-template", "{question}: {answer}", "--text-field", "answer"],
     "error: --text-field 'answer' and --text-template '{question}: {answer}': give one"),
    (["--text-template", "no field at all"], "error: text template 'no field at all': names no field"),
    (["--text-template", "{0} and {}"], "error: text template '{0} and {}': a positional field {0}"),
    (["--text-template", "{answer!r}"], "error: text template '{answer!r}': {answer!r} is not a plain field"),
    (["--text-template", "{answer"], "error: text template '{answer': expected '}' before end of string"),
    (["--text-field", "a.b"], "error: text field 'a.b': name one corpus field"),
])
def test_a_template_that_cannot_be_rendered_is_one_clear_line(args, message, tiny_multilingual_repo, tmp_path):
    write_corpus(tmp_path, [{"id": 0, "question": "q", "answer": "a"}, {"id": 1, "question": "q", "answer": None}])
    result = run_cli("encode", "--workdir", str(tmp_path), "--repository", str(tiny_multilingual_repo),
                     "--model", "tiny-multilingual", *args)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (tmp_path / "vectors" / "chunk-000000-2.npz").exists()


@pytest.mark.parametrize("case, message", [
    ("missing-corpus", "corpus.jsonl: run `mmsearch job prepare"),
    ("malformed", "corpus.jsonl line 2: not valid JSON"),
    ("no-field", "record id 1: no text in field 'question'"),
    ("unknown-model", "model 'nope': no finished export"),
    ("bad-shard", "--shard '3/3': need 0 <= i < N"),
    ("other-settings", "holds vectors made with other settings (chunk_size"),
])
def test_bad_input_one_clear_line(case, message, tiny_multilingual_repo, tmp_path):
    args = {"--workdir": str(tmp_path), "--repository": str(tiny_multilingual_repo), "--model": "tiny-multilingual"}
    if case != "missing-corpus":
        write_corpus(tmp_path, [{"id": 0, "question": "ok"}, {"id": 1, "answer": "no question"}])
    if case == "malformed":
        (tmp_path / "corpus.jsonl").write_text('{"id": 0, "question": "ok"}\n{"id": 1,\n')
    if case in ("unknown-model", "bad-shard", "other-settings"):
        write_corpus(tmp_path, [{"id": 0, "question": "ok"}])
    if case == "unknown-model":
        args["--model"] = "nope"
    if case == "bad-shard":
        args["--shard"] = "3/3"
    if case == "other-settings":
        assert run_cli("encode", *[x for kv in args.items() for x in kv]).exit_code == 0
        args["--chunk-size"] = "7"
    result = run_cli("encode", *[x for kv in args.items() for x in kv])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
