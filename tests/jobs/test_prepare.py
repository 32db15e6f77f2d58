"""prepare: images (with corrupt and non-image files), Q&A JSONL, the stdlib corpus; stable ids; bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch.jobs.errors import JobError
from mmsearch.jobs.corpus import read_corpus
from mmsearch.jobs.prepare import ID_BITS, prepare, stable_id

MMSEARCH = [sys.executable, "-m", "mmsearch.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MMSEARCH, "job", *args], capture_output=True, text=True, timeout=120)


def corpus(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "corpus.jsonl").read_text().splitlines()]


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub dir").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, fmt in enumerate(["JPEG", "PNG", "WEBP"]):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / f"img{i}.{fmt.lower()}", fmt)
    Image.new("RGB", (30, 30), "red").save(folder / "sub dir" / "red square.jpg")
    good = (folder / "img0.jpeg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_images_skip_unreadable_files_and_build_urls(tmp_path, image_folder):
    summary = prepare(str(tmp_path / "w"), "images", str(image_folder), base_url="http://host:8000/imgs/")
    assert summary["records"] == 4 and summary["skipped"] == 3
    records = corpus(tmp_path / "w")
    assert [r["name"] for r in records] == ["img0.jpeg", "img1.png", "img2.webp", "sub dir/red square.jpg"]
    assert records[3]["url"] == "http://host:8000/imgs/sub%20dir/red%20square.jpg"
    assert all(r["id"] == stable_id(r["name"]) for r in records)
    # what T2I filters on: the sub-folder and the real pixel size (a JPEG's too, decoded at reduced scale)
    assert [(r["folder"], r["width"], r["height"]) for r in records] == \
        [("", 60, 40), ("", 60, 40), ("", 60, 40), ("sub dir", 30, 30)]


def test_images_without_base_url_use_file_uris(tmp_path, image_folder):
    prepare(str(tmp_path / "w"), "images", str(image_folder))
    url = corpus(tmp_path / "w")[0]["url"]
    assert url.startswith("file://") and Path(url[len("file://"):]).is_file()


QA_LINES = [
    {"qid": "qid_1", "category": "教育/科学", "title": "什么是光合作用", "desc": "", "answer": "植物利用光能合成有机物。"},
    {"qid": "qid_2", "category": "生活", "title": "How do I boil an egg?", "desc": "", "answer": "Ten minutes."},
    {"qid": "qid_1", "category": "教育/科学", "title": "什么是光合作用", "desc": "", "answer": "植物利用光能合成有机物。"},
    {"qid": 3, "title": "No category", "answer": "fine"},
]


def write_jsonl(path: Path, rows: list, extra: str = "") -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n" + extra, encoding="utf-8")
    return path


def test_qa_fields_ids_and_duplicates(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", QA_LINES)
    summary = prepare(str(tmp_path / "w"), "qa", str(source))
    assert summary["records"] == 3 and summary["duplicates"] == 1
    records = corpus(tmp_path / "w")
    assert records[0] == {"id": stable_id("qid_1"), "question": "什么是光合作用",
                          "answer": "植物利用光能合成有机物。", "category": "教育/科学"}
    assert records[2]["category"] == "" and records[2]["id"] == stable_id("3")


@pytest.mark.parametrize("first, second", [
    ({"qid": "q7", "title": "a?", "answer": "one"}, {"qid": "q7", "title": "a?", "answer": "another"}),
    ({"qid": 1, "title": "a?", "answer": "one"}, {"qid": "1", "title": "b?", "answer": "two"}),
])
def test_qa_conflicting_duplicates_fail_naming_both_lines(tmp_path, first, second):
    """A repeated key with other content was once dropped silently (exit 0); 1 and "1" collapsed."""
    source = write_jsonl(tmp_path / "qa.jsonl", [first, {"qid": "other", "title": "x", "answer": "y"}, second])
    with pytest.raises(JobError) as err:
        prepare(str(tmp_path / "w"), "qa", str(source))
    assert f"{source} line 1 and {source} line 3: two different records with the key" in str(err.value)
    assert not (tmp_path / "w" / "corpus.jsonl").exists()


def test_qa_configurable_fields_and_question_keys(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", [{"q": "a?", "a": "b", "topic": "t"}, {"q": "c?", "a": "d"}])
    prepare(str(tmp_path / "w"), "qa", str(source), question_field="q", answer_field="a",
            category_field="topic", id_field="")
    assert [(r["id"], r["question"], r["category"]) for r in corpus(tmp_path / "w")] == [
        (stable_id("a?"), "a?", "t"), (stable_id("c?"), "c?", "")]


def test_reruns_give_the_same_ids_and_adding_records_renumbers_nothing(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", QA_LINES[:2])
    prepare(str(tmp_path / "a"), "qa", str(source))
    prepare(str(tmp_path / "b"), "qa", str(source))
    assert corpus(tmp_path / "a") == corpus(tmp_path / "b")
    write_jsonl(source, [QA_LINES[3], *QA_LINES[:2]])
    prepare(str(tmp_path / "c"), "qa", str(source))
    ids = {r["question"]: r["id"] for r in corpus(tmp_path / "c")}
    assert all(ids[r["question"]] == r["id"] for r in corpus(tmp_path / "a"))


def test_stable_id_is_a_json_safe_53_bit_integer():
    ids = [stable_id(f"key{i}") for i in range(1000)]
    assert len(set(ids)) == 1000 and all(0 <= i < 2**ID_BITS <= 2**53 for i in ids)
    assert stable_id("csv") == int.from_bytes(__import__("hashlib").sha256(b"csv").digest()[:8], "big") >> 11


def test_stdlib_corpus_restricted_to_modules(tmp_path):
    summary = prepare(str(tmp_path / "w"), "stdlib", "csv,json,os.path")
    records = corpus(tmp_path / "w")
    assert summary["records"] == len(records) > 40
    by_name = {r["question"]: r for r in records}
    assert by_name["csv"]["answer"] == "CSV parsing and writing." and by_name["csv"]["category"] == "csv"
    assert "Join two or more pathname components" in by_name["os.path.join"]["answer"]
    assert {"json.dumps", "json.loads", "csv.Sniffer", "csv.reader", "os.path.exists"} <= by_name.keys()
    assert not [n for n in by_name if any(p.startswith("_") for p in n.split("."))]
    assert [r["question"] for r in records] == sorted(by_name)


def test_full_stdlib_corpus_skips_noise_and_is_identical_across_processes(tmp_path):
    result = run_cli("prepare", "--workdir", str(tmp_path / "a"), "--source-kind", "stdlib")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["event"] == "done" and done["records"] > 1500
    names = {r["question"] for r in corpus(tmp_path / "a")}
    assert {"csv", "json", "os.path", "re", "sqlite3", "collections.OrderedDict", "sys.excepthook"} <= names
    assert not [n for n in names if n.split(".")[0] in ("tkinter", "idlelib", "test", "this", "antigravity")]
    assert not [n for n in names if "test" in n.split(".")[:-1] or "__main__" in n]
    assert "encodings.utf_8" not in names and "encodings" in names
    assert "unittest" in names and "unittest.mock.MagicMock" in names
    prepare(str(tmp_path / "b"), "stdlib")  # in-process, after pytest and friends replaced hooks
    assert corpus(tmp_path / "a") == corpus(tmp_path / "b")


SIGNATURE_DOCS = {  # docstrings as the standard library writes them, and what the corpus keeps of them
    "monotonic() -> float\n\nMonotonic clock, cannot go backward.": "Monotonic clock, cannot go backward.",
    "fileno() -> integer\nReturn the file descriptor.\n\nMore.": "Return the file descriptor.",
    "set() -> new empty set object\nset(iterable) -> new set object\n\nBuild a set.": "Build a set.",
    "bytes(int) -> bytes object of size given by the parameter\nbytes() -> empty bytes object\n\nConstruct bytes.":
        "Construct bytes.",
    "gmtime([seconds]) -> (tm_year, tm_mon, tm_mday,\n    tm_hour, tm_min, tm_sec)\n\nConvert seconds.":
        "Convert seconds.",
    "deque([iterable[, maxlen]]) --> deque object\n\nA list-like sequence.": "A list-like sequence.",
    "getrandbits(k) -> x.  Generates an int with k random bits.":
        "getrandbits(k) -> x. Generates an int with k random bits.",
    "D.copy() -> a shallow copy of D": "D.copy() -> a shallow copy of D",
    "Return f(x) for each x.\n\nMore.": "Return f(x) for each x.",
    "alias(identifier name, identifier? asname)": "",
    "add_argument(dest, ..., name=value, ...)\nadd_argument(option_string, option_string, ..., name=value, ...)": "",
}


@pytest.mark.parametrize("doc", SIGNATURE_DOCS)
def test_a_docstring_that_opens_with_a_signature_is_summarised_by_its_description(doc):
    from mmsearch.jobs.sources.stdlib import first_paragraph, is_signature

    assert first_paragraph(doc) == SIGNATURE_DOCS[doc]
    assert not is_signature(first_paragraph(doc))


def test_no_stdlib_document_is_a_bare_signature(tmp_path):
    from mmsearch.jobs.sources.stdlib import is_signature

    prepare(str(tmp_path / "w"), "stdlib")
    by_name = {r["question"]: r["answer"] for r in corpus(tmp_path / "w")}
    assert [name for name, text in by_name.items() if is_signature(text)] == []
    assert by_name["time.monotonic"] == "Monotonic clock, cannot go backward."
    assert by_name["bytes.find"].startswith("Return the lowest index in B where subsection sub is found")
    assert by_name["cProfile.Profile.enable"].startswith("Start collecting profiling information.")
    assert by_name["set"] == "Build an unordered collection of unique elements."
    assert "ast.alias" not in by_name and "ast" in by_name  # nothing but a signature: skipped like no docstring


def test_read_corpus_round_trip(tmp_path):
    prepare(str(tmp_path / "w"), "stdlib", "json")
    assert read_corpus(str(tmp_path / "w")).records == corpus(tmp_path / "w")


@pytest.mark.parametrize("body, expected", [
    ('{"qid": "1", "title": "t", "answer": "a"}\n{"qid": "2", "title": "t2", "answer": \n', "line 2: not valid JSON"),
    ('{"qid": "1", "title": "t", "answer": "a"}\n\n["a list"]\n', "line 3: expected a JSON object, got list"),
    ('{"qid": "1", "answer": "a"}\n', "line 1: no field 'title' (set --question-field"),
    ('{"title": "t", "answer": "a"}\n', "line 1: no id field 'qid'"),
    ("\n\n", "empty corpus"),
])
def test_bad_qa_files_fail_naming_the_line(tmp_path, body, expected):
    source = tmp_path / "qa.jsonl"
    source.write_text(body)
    with pytest.raises(JobError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        prepare(str(tmp_path / "w"), "qa", str(source))
    assert not (tmp_path / "w" / "corpus.jsonl").exists()


@pytest.mark.parametrize("args, expected", [
    (["--source-kind", "images", "--source", "/no/such/folder"], "error: --source /no/such/folder:"),
    (["--source-kind", "images"], "error: --source is required for --source-kind images"),
    (["--source-kind", "stdlib", "--source", "csv,notamodule"], "'notamodule' is not a public standard-library module"),
    (["--source-kind", "qa", "--source", "BAD"], "not valid JSON"),
    (["--source-kind", "images", "--source", "EMPTY"], "error: empty corpus"),
])
def test_cli_bad_input_exits_non_zero_with_one_line(tmp_path, args, expected):
    (tmp_path / "bad.jsonl").write_text('{"qid": 1, "title": "x", "answer": "y"}\n{oops}\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    args = [{"BAD": str(tmp_path / "bad.jsonl"), "EMPTY": str(tmp_path / "empty")}.get(a, a) for a in args]
    result = run_cli("prepare", "--workdir", str(tmp_path / "w"), *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
