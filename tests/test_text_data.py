"""Text ingest end to end: every source on tiny generated files, quarantine of binary and
undecodable files, duplicates, PII, splits, the report, the CLI, auto-detection, images intact."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, DataError
from genforge.data import ingesters
from genforge.data.canonical import open_dataset
from genforge.data.text import TextDataset
from genforge.data.text.config import TextIngestConfig
from genforge.data.text.ingest import ingest
from genforge.data.text.sources import claims, open_text_source

POEM = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n"
)
FRENCH = (
    "Il était une fois, dans un château très éloigné, une princesse qui rêvait de voyages à "
    "l'étranger. Elle préférait les forêts aux salons, et l'été aux fêtes de la cour.\n"
) * 3


def _doc(i: int) -> str:
    rng = random.Random(i)
    words = [
        rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]) for _ in range(60)
    ]
    return f"Document {i}.\n" + " ".join(words) + "\n"


def _cfg(**kw) -> TextIngestConfig:
    return from_dict(TextIngestConfig, kw)


def _texts(spec: str, **kw) -> list:
    return list(open_text_source(spec, _cfg(**kw)))


# ---- sources


def test_txt_file_is_one_document(tmp_path: Path) -> None:
    (tmp_path / "poem.TXT").write_text(POEM)
    docs = _texts(str(tmp_path / "poem.TXT"))
    assert len(docs) == 1 and docs[0].data.decode() == POEM


def test_folder_recursive_any_case_with_split_folders(tmp_path: Path) -> None:
    (tmp_path / "train" / "deep").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "a.txt").write_text("a")
    (tmp_path / "train" / "deep" / "b.MD").write_text("b")
    (tmp_path / "train" / "c.png").write_bytes(b"\x89PNG")  # not text: skipped
    (tmp_path / "train" / ".hidden.txt").write_text("h")
    (tmp_path / "val" / "v.markdown").write_text("v")
    docs = _texts(str(tmp_path))
    got = {(Path(d.origin).name, d.split) for d in docs}
    assert got == {("a.txt", "train"), ("b.MD", "train"), ("v.markdown", "val")}


def test_jsonl_field_and_bad_rows(tmp_path: Path) -> None:
    lines = [
        json.dumps({"body": "first", "id": 1}),
        "",
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"id": 3}),
        json.dumps({"body": 7}),
        json.dumps({"body": "ünïcode ok"}),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    docs = _texts(str(tmp_path / "d.jsonl"), field="body")
    good = [d.text for d in docs if d.error is None]
    bad = {d.origin.rsplit(":", 1)[1]: d.error for d in docs if d.error}
    assert good == ["first", "ünïcode ok"]
    assert set(bad) == {"3", "4", "5", "6"} and "not valid JSON" in bad["3"] and "no field 'body'" in bad["5"]


def test_jsonl_missing_field_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:1: no field 'text'.*fields: content, id.*--field"):
        _texts(str(tmp_path / "d.jsonl"))


def test_csv_column_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes('id,body\n1,"multi\nline, with comma"\n2,second\n'.encode("latin-1"))
    docs = _texts(str(path), column="body")
    assert [d.text for d in docs] == ["multi\nline, with comma", "second"]
    with pytest.raises(DataError, match=r"no column 'text'; columns: id, body; pick one with --column"):
        _texts(str(path))


def test_tar_gz_streams_text_members(tmp_path: Path) -> None:
    archive = tmp_path / "t.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [
            ("x/a.txt", b"alpha"),
            ("x/img.png", b"\x89PNG"),
            ("x/b.md", FRENCH.encode("latin-1")),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docs = _texts(str(archive))
    assert [d.origin.split("::")[1] for d in docs] == ["x/a.txt", "x/b.md"]
    assert claims(str(archive))


def test_hf_saved_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"content": [_doc(i) for i in range(6)], "n": list(range(6))}
            ),
            "validation": datasets.Dataset.from_dict({"content": [_doc(10), _doc(11)], "n": [0, 1]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "hf"))
    assert claims(str(tmp_path / "hf"))  # a string column and no image column
    result = ingest(str(tmp_path / "hf"), tmp_path / "out")  # 'content' is the only string column
    ds = open_dataset(result.path)
    assert ds.split("train").documents == 6 and ds.split("val").documents == 2
    assert ds.manifest["source"]["column"] == "content"
    with pytest.raises(DataError, match="no column 'nope'"):
        ingest(str(tmp_path / "hf"), tmp_path / "out2", _cfg(field="nope"))


# ---- ingest: quarantine, nothing good lost


def _mixed_folder(root: Path) -> None:
    root.mkdir()
    for i in range(8):
        (root / f"doc{i}.txt").write_text(_doc(i), encoding="utf-8")
    (root / "latin1.txt").write_bytes(FRENCH.encode("latin-1"))
    (root / "utf16.txt").write_bytes(POEM.encode("utf-16"))
    (root / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 4)
    rng = random.Random(0)
    (root / "garbled.txt").write_bytes(
        bytes(rng.choice([1, 2, 3, 4, 5, 6, 14, 15, 16, 17]) for _ in range(500))
    )
    (root / "empty.md").write_bytes(b"")
    (root / "x-copy.txt").write_text(_doc(3))  # exact duplicate of doc3, later in walk order
    near = _doc(5).replace("Document 5.", "Document five.")
    (root / "x-near.txt").write_text(near)


def test_ingest_quarantines_and_keeps_all_good_text(tmp_path: Path) -> None:
    _mixed_folder(tmp_path / "src")
    result = ingest(str(tmp_path / "src"), tmp_path / "out")
    ds = open_dataset(result.path)
    assert isinstance(ds, TextDataset)
    log = json.loads((result.path / "process.json").read_text())
    kinds = {Path(q["origin"]).name: q["kind"] for q in log["quarantine"]}
    assert kinds == {"binary.txt": "binary", "garbled.txt": "binary", "empty.md": "empty"}
    dropped = {Path(d["origin"]).name: (d["kind"], Path(d["duplicate_of"]).name) for d in log["dropped"]}
    assert dropped == {"x-copy.txt": ("exact", "doc3.txt"), "x-near.txt": ("near", "doc5.txt")}
    everything = "".join(ds.split(s).text for s in ds.split_names)
    assert FRENCH in everything and POEM in everything  # latin-1 and UTF-16 decoded, nothing good lost
    for i in range(8):
        assert _doc(i) in everything
    m = ds.manifest
    assert (
        m["counts"]["documents"] == 10
        and m["counts"]["quarantined"] == 3
        and m["counts"]["duplicates_dropped"] == 2
    )
    assert sum(ds.split(s).documents for s in ds.split_names) == 10
    assert m["split"]["method"] == "document" and ds.split("val").documents == 1
    assert m["encodings"]["utf-8"] >= 8 and sum(m["encodings"].values()) == 12
    report = json.loads((result.path / "report.json").read_text())
    assert report["quarantine_by_kind"] == {"binary": 2, "empty": 1}
    assert report["summary"]["duplicates_dropped"] == 2
    html = (result.path / "report.html").read_text()
    assert "Quarantined (3)" in html and "binary.txt" in html


def test_ingest_scrubs_pii_and_reports_counts(tmp_path: Path) -> None:
    text = (
        "Contact: jane@example.com or (555) 123-4567.\nServer 10.1.2.3, card 4111 1111 1111 1111.\n"
        "ACT 3, SCENE 2, in 1592 <b>&amp;</b>.\n"
    )
    (tmp_path / "a.txt").write_text(text * 3)
    result = ingest(str(tmp_path / "a.txt"), tmp_path / "out", _cfg(val_fraction=0.3))
    ds = open_dataset(result.path)
    joined = ds.train_split.text + ds.split("val").text
    assert "jane@" not in joined and "4111" not in joined and "<EMAIL>" in joined and "1592" in joined
    assert ds.manifest["pii"]["counts"] == {"email": 3, "phone": 3, "ip": 3, "card": 3}
    assert result.report["summary"]["pii"]["card"] == 3
    html = (result.path / "report.html").read_text()
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in html  # sample passages escaped
    off = ingest(str(tmp_path / "a.txt"), tmp_path / "off", _cfg(pii=False))
    assert "jane@example.com" in open_dataset(off.path).train_split.text


def test_paragraph_duplicates_reported_or_dropped(tmp_path: Path) -> None:
    para = "This paragraph is long enough to be compared, and it appears in two documents of the corpus."
    for i in range(4):
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / f"d{i}.txt").write_text(
            f"Own opening {i}.\n\n{para if i < 2 else _doc(i)}\n\nOwn end {i}."
        )
    kept = ingest(str(tmp_path / "src"), tmp_path / "a", _cfg(min_paragraph_chars=50))
    par = kept.manifest["duplicates"]["paragraphs"]
    assert par["exact_copies"] == 1 and par["groups"] == 1 and par["dropped"] == 0
    dropped = ingest(
        str(tmp_path / "src"), tmp_path / "b", _cfg(min_paragraph_chars=50, paragraph_dup_policy="drop")
    )
    ds = open_dataset(dropped.path)
    everything = "".join(ds.split(s).text for s in ds.split_names)
    assert everything.count(para) == 1 and "Own end 1." in everything and "Own opening 1." in everything


def test_bpe_dataset_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"{i}.txt").write_text(_doc(i) + "ünïcödé 😀\n")
    result = ingest(str(src), tmp_path / "out", _cfg(tokenizer="bpe", vocab_size=300))
    ds = open_dataset(result.path)
    assert ds.tokenizer.kind == "bpe" and ds.model_fields() == {"vocab_size": ds.tokenizer.vocab_size}
    for name in ds.split_names:
        split = ds.split(name)
        assert ds.tokenizer.decode(np.asarray(split.tokens).tolist()) == split.text
        assert len(split) < split.chars  # merges compress
    assert json.loads((result.path / "ingest.json").read_text())["tokenizer"] == "bpe"


def test_no_usable_text(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_bytes(b"\x00\x01binary")
    with pytest.raises(DataError, match=r"no usable text.*quarantined 1 \(binary\)"):
        ingest(str(tmp_path / "x.txt"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- CLI, auto-detection, dispatch


def test_cli_ingest_and_report_on_a_text_file(tmp_path: Path) -> None:
    from genforge.cli import app

    (tmp_path / "in.txt").write_text(POEM * 20)
    out = tmp_path / "ds"
    runner = CliRunner()
    res = runner.invoke(app, ["data", "ingest", str(tmp_path / "in.txt"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 kept" in res.output and "char tokenizer" in res.output and str(out) in res.output
    ds = open_dataset(out)
    assert isinstance(ds, TextDataset) and ds.manifest["split"]["method"] == "position"
    text = POEM * 20
    assert ds.split("val").text == text[int(len(text) * 0.9) :]
    first = json.loads((out / "report.json").read_text())
    (out / "report.json").unlink()
    res = runner.invoke(app, ["data", "report", str(out)])
    assert res.exit_code == 0 and "characters" in res.output, res.output
    assert json.loads((out / "report.json").read_text()) == first  # reproduces what ingest wrote
    bad = runner.invoke(
        app, ["data", "ingest", str(tmp_path / "in.txt"), "--out", str(tmp_path / "x"), "--size", "8"]
    )
    assert bad.exit_code != 0 and "--size: not an option for text data" in str(bad.exception or bad.output)
    bpe = runner.invoke(
        app,
        [
            "data",
            "ingest",
            str(tmp_path / "in.txt"),
            "-o",
            str(tmp_path / "b"),
            "--tokenizer",
            "bpe",
            "--vocab-size",
            "280",
            "--split-by",
            "document",
        ],
    )
    assert bpe.exit_code != 0 and "--split-by position" in str(bpe.exception or bpe.output)  # one document
    forced = runner.invoke(
        app, ["data", "ingest", str(tmp_path / "in.txt"), "-o", str(tmp_path / "c"), "--modality", "image"]
    )
    assert forced.exit_code != 0  # a text file read as images: nothing decodes


def test_auto_detection(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a.md").write_text("x")
    (tmp_path / "b.jsonl").write_text("{}")
    (tmp_path / "c.csv").write_text("text\nx\n")
    img = tmp_path / "imgs" / "cat"
    img.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(img / "0.png")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    for name, modality in [
        ("a.md", "text"),
        ("b.jsonl", "text"),
        ("c.csv", "text"),
        ("imgs", "image"),
        ("texts", "text"),
    ]:
        assert ingesters.detect(str(tmp_path / name)) == modality, name
    assert ingesters.detect("digits") == "image"
    with pytest.raises(DataError, match="nope.txt: no such file"):
        ingesters.resolve(str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="modality"):
        ingesters.resolve(str(tmp_path / "a.md"), "video")


def test_image_ingest_still_works_through_the_registry(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("ants", "bees"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(np.full((8, 8, 3), 20 * k + (100 if cls == "bees" else 0), np.uint8)).save(
                tmp_path / "src" / cls / f"{k}.png"
            )
    modality, result = ingesters.ingest(str(tmp_path / "src"), tmp_path / "out", {"workers": 0})
    assert modality == "image" and open_dataset(result.path).class_names == ["ants", "bees"]
    modality, report = ingesters.write_report(tmp_path / "out")
    assert modality == "image" and report["summary"]["images"] == 12
    with pytest.raises(ConfigError, match="--tokenizer: not an option for image data"):
        ingesters.ingest(str(tmp_path / "src"), tmp_path / "x", {"tokenizer": "bpe"})
