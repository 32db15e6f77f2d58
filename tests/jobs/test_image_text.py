"""prepare reads the text an image carries: captions and alt text from sidecars, EXIF and XMP; the text in
it with a real OCR engine (rapidocr, and tesseract where installed), bounded per image; skips named and
counted, never a stopped job."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from mmsearch.jobs.errors import JobError
from mmsearch.jobs.prepare import prepare
from mmsearch.jobs.sources.image_text import OcrReader, tesseract_lines, unique, xmp_descriptions
from tests.support.drawn_text import char_accuracy, drawn_set
from tests.support.indexes import read_records

XMP = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
       'A lighthouse on a rocky coast</rdf:li></rdf:Alt></dc:description><dc:title><rdf:Alt>'
       '<rdf:li xml:lang="x-default">Lighthouse</rdf:li></rdf:Alt></dc:title></rdf:Description></rdf:RDF>'
       '</x:xmpmeta><?xpacket end="w"?>')


def blank(size=(64, 48), colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.fixture()
def captioned(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    blank().save(folder / "bike.jpg")
    (folder / "bike.jpg.txt").write_text("A red bicycle leaning on a wall\n")
    blank().save(folder / "cat.png")
    (folder / "cat.json").write_text(json.dumps({"caption": "A sleeping cat", "alt": "grey cat on a sofa",
                                                 "title": "Cat", "rating": 5}))
    exif = Image.Exif()
    exif[0x010E] = "Sunset over the harbour"
    blank().save(folder / "sunset.jpg", exif=exif)
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    blank().save(folder / "lighthouse.png", pnginfo=info)
    (folder / "lighthouse.png.txt").write_text("lighthouse")  # repeats the XMP title: kept once
    blank().save(folder / "plain.png")
    (folder / "notes.txt").write_text("not an image, no image beside it")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "odd.json").write_text("[1, 2]")  # not a sidecar of anything: skipped as unreadable
    return folder


def test_captions_and_alt_text_come_from_sidecars_exif_and_xmp(tmp_path, captioned):
    summary = prepare(str(tmp_path / "w"), "images", str(captioned))
    records = {r["name"]: r for r in read_records(tmp_path / "w")}
    assert set(records) == {"bike.jpg", "cat.png", "sunset.jpg", "lighthouse.png", "plain.png"}
    assert records["bike.jpg"]["caption"] == "A red bicycle leaning on a wall"
    assert records["cat.png"]["caption"] == "A sleeping cat\nCat" and records["cat.png"]["alt_text"] == "grey cat on a sofa"
    assert records["sunset.jpg"]["caption"] == "Sunset over the harbour"
    assert records["lighthouse.png"]["caption"] == "lighthouse\nA lighthouse on a rocky coast"
    assert {k: records["plain.png"][k] for k in ("caption", "alt_text", "ocr_text", "ocr_lines")} == {
        "caption": "", "alt_text": "", "ocr_text": "", "ocr_lines": []}  # every field there, empty
    assert summary["records"] == 5 and summary["skipped"] == 3
    assert summary["skips"] == {"unreadable": 3}  # notes.txt, broken.jpg, odd.json; the sidecars are read


def test_xmp_and_tesseract_parsers():
    assert xmp_descriptions(XMP) == ["A lighthouse on a rocky coast", "Lighthouse"]
    assert xmp_descriptions(b"<x:xmpmeta") == [] and xmp_descriptions(None) == []
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert xmp_descriptions(bomb) == []
    tsv = ("level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
           "5\t1\t1\t1\t1\t1\t10\t20\t30\t10\t90\tHello\n5\t1\t1\t1\t1\t2\t45\t21\t40\t10\t80\tworld\n"
           "5\t1\t1\t1\t2\t1\t10\t40\t30\t10\t-1\t \n")
    assert tesseract_lines(tsv) == [[[[10, 20], [85, 20], [85, 31], [10, 31]], "Hello world", pytest.approx(0.85)]]
    assert unique(["A cat", "a  cat", "", "Dog"]) == ["A cat", "Dog"]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drawn")
    items = drawn_set(6, max_rotation=4, max_noise=0.02)
    for item in items:
        item.image.save(folder / item.name)
    return folder, items


@pytest.mark.parametrize("engine", ["rapidocr", "tesseract"])
def test_ocr_reads_drawn_text_into_the_record(tmp_path, drawn, engine):
    if engine == "tesseract" and shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed (make system-deps installs it)")
    folder, items = drawn
    summary = prepare(str(tmp_path / "w"), "images", str(folder), ocr=engine, ocr_timeout=600)
    assert summary["records"] == len(items) and summary["skips"] == {}
    records = {r["name"]: r for r in read_records(tmp_path / "w")}
    accuracy = [char_accuracy(records[i.name]["ocr_text"], i.text) for i in items]
    assert sum(accuracy) / len(accuracy) > 0.8, accuracy
    record = records[items[0].name]
    line = record["ocr_lines"][0]
    assert line["text"] in record["ocr_text"] and 0.5 <= line["confidence"] <= 1
    width, height = record["width"], record["height"]
    assert len(line["box"]) == 4 and all(-2 <= x <= width + 2 and -2 <= y <= height + 2 for x, y in line["box"])
    assert 0.5 <= record["ocr_confidence"] <= 1


def test_an_ocr_overrun_is_a_counted_skip_and_the_next_image_is_read(tmp_path, drawn):
    folder, items = drawn
    with OcrReader("rapidocr", timeout=0.001) as reader:  # no image is read in a millisecond
        from mmsearch.jobs.sources.image_text import OcrSkip

        with pytest.raises(OcrSkip) as skipped:
            reader.read(folder / items[0].name)
        assert skipped.value.reason == "ocr_timeout" and "not read within 0.001 s" in str(skipped.value)
        reader.engine.timeout = 120  # the killed worker is replaced for the next image
        assert reader.read(folder / items[1].name)
    summary = prepare(str(tmp_path / "w"), "images", str(folder), ocr="rapidocr", ocr_timeout=0.001)
    assert summary["records"] == len(items) and summary["skips"] == {"ocr_timeout": len(items)}
    assert summary["skipped"] == 0  # the images are indexed, with their captions, without OCR text
    assert all(r["ocr_text"] == "" for r in read_records(tmp_path / "w"))


def test_an_image_the_engine_cannot_read_is_an_ocr_failure_not_a_crash(tmp_path):
    with OcrReader("rapidocr", timeout=120) as reader:
        from mmsearch.jobs.sources.image_text import OcrSkip

        with pytest.raises(OcrSkip) as skipped:
            reader.read(tmp_path / "gone.png")
        assert skipped.value.reason == "ocr_failed"


@pytest.mark.parametrize("kwargs, message", [
    (dict(source_kind="images", ocr="easyocr"), "--ocr 'easyocr': choose one of none, rapidocr, tesseract"),
    (dict(source_kind="images", ocr="rapidocr", ocr_timeout=0), "--ocr-timeout 0: give a positive number"),
    (dict(source_kind="stdlib", source="csv", ocr="rapidocr"), "--ocr rapidocr: OCR reads images and video frames; "
                                                               "--source-kind stdlib has none"),
])
def test_bad_ocr_settings_are_refused_naming_the_flag(tmp_path, captioned, kwargs, message):
    kwargs = {"source": str(captioned), **kwargs}
    with pytest.raises(JobError, match=message.replace("(", r"\(")):
        prepare(str(tmp_path / "w"), **kwargs)
