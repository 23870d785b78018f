"""`--modality auto`: at most one modality claims a source, whatever package was imported first.

The ingesters register in import order, so an in-process test sees only the order of whichever
test imported a modality first: the detections run in a fresh interpreter per order (audio
first, text first). Also the lazy registration helpers and the cost of detection (no soundfile,
tokenizers or datasets imported to tell a folder or a file)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.core.errors import ConfigError
from genforge.data import ingesters

REPO = Path(__file__).resolve().parents[1]
SR = 8000
ORDERS = ["genforge.data.audio,genforge.data.text", "genforge.data.text,genforge.data.audio"]

DETECT = """
import importlib, json, sys
for package in sys.argv[1].split(","):
    importlib.import_module(package)
from genforge.core.errors import ConfigError
from genforge.data import ingesters
got = {}
for spec in sys.argv[2:]:
    try:
        got[spec] = ingesters.detect(spec)
    except ConfigError as exc:
        got[spec] = "error: " + str(exc)
heavy = ("soundfile", "tokenizers", "datasets")  # none needed to tell folders and files apart
print(json.dumps({"detected": got, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def _detect(order: str, specs: list[Path]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", DETECT, order, *map(str, specs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"HF_DATASETS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wav(freq: float) -> bytes:
    t = np.arange(SR // 10) / SR
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _files(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        data = _wav(300) if name.endswith(".wav") else f"notes on {name}\n".encode()
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {
        # a stray README among clips: text used to claim it too, and won when imported first
        "audio": _files(tmp_path / "clips", ["0_ann_0.wav", "1_ann_0.wav", "2_bob_0.wav", "README.txt"]),
        "text": _files(tmp_path / "notes", ["a.txt", "b.md", "c.txt", "voice.wav"]),
        "tie": _files(tmp_path / "mixed", ["a.wav", "b.wav", "a.txt", "b.txt"]),
        "file": _files(tmp_path / "one", ["x.wav"]) / "x.wav",
    }


@pytest.mark.parametrize("order", ORDERS)
def test_folders_are_detected_whatever_the_import_order(folders: dict[str, Path], order: str) -> None:
    out = _detect(order, list(folders.values()))
    got = {kind: out["detected"][str(path)] for kind, path in folders.items()}
    assert got["audio"] == "audio" and got["text"] == "text" and got["file"] == "audio"
    assert (
        got["tie"]
        == f"error: {folders['tie']}: could be read as audio or text data; pass --modality (audio, text) to say which"
    )
    assert out["heavy"] == []  # telling folders and files apart imports no decoder, tokenizer or HF


def test_two_claims_are_an_error_that_asks_for_the_modality(folders: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"could be read as audio or text data; pass --modality"):
        ingesters.resolve(str(folders["tie"]))
    assert ingesters.resolve(str(folders["tie"]), "text") == "text"  # --modality settles it
    assert ingesters.detect(str(folders["audio"])) == "audio"
    assert ingesters.detect("digits") == "image"  # claimed by nobody: the fallback


def test_leading_modalities() -> None:
    lead = ingesters.leading_modalities
    assert lead(["a.wav", "b.WAV", "c.txt", "d.png"]) == ["audio"]
    assert lead(["a.wav", "b.txt"]) == ["audio", "text"]  # a tie: both (sorted), so detection refuses
    assert lead(["a.png", "b.md", "c.jpg"]) == ["image"]
    assert lead(["a.bin", ".hidden.wav", "._x.wav"]) == [] and lead([]) == []


@pytest.fixture
def hf_sets(tmp_path: Path) -> dict[str, Path]:
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    wavs = [{"bytes": _wav(f), "path": None} for f in (300, 500)]
    pngs = [{"bytes": _png(v), "path": None} for v in (10, 200)]
    label = datasets.ClassLabel(names=["no", "yes"])
    string = datasets.Value("string")
    sets = {
        # speaker_id is a string column: text claimed it too, and won when imported first
        "audio": datasets.Dataset.from_dict(
            {"audio": wavs, "label": [0, 1], "speaker_id": ["ann", "bob"]}
        ).cast(datasets.Features({"audio": datasets.Audio(), "label": label, "speaker_id": string})),
        "text": datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict({"content": ["one doc", "two docs"], "n": [0, 1]}),
                "validation": datasets.Dataset.from_dict({"content": ["held out"], "n": [2]}),
            }
        ),
        "image": datasets.Dataset.from_dict(
            {"picture": pngs, "caption": ["dark", "light"], "kind": [0, 1]},
            features=datasets.Features({"picture": datasets.Image(), "caption": string, "kind": label}),
        ),
        # image arrays beside a string column: text claimed it (it looked for Image features only)
        "pixels": datasets.Dataset.from_dict(
            {"pixels": np.arange(2 * 3 * 3).reshape(2, 3, 3).tolist(), "note": ["a", "b"]}
        ),
        "both": datasets.Dataset.from_dict({"audio": wavs, "image": pngs}).cast(
            datasets.Features({"audio": datasets.Audio(), "image": datasets.Image()})
        ),
    }
    paths = {}
    for kind, ds in sets.items():
        ds.save_to_disk(str(tmp_path / f"hf_{kind}"))
        paths[kind] = tmp_path / f"hf_{kind}"
    broken = tmp_path / "hf_broken"
    broken.mkdir()
    (broken / "state.json").write_text("{}")  # looks saved, does not load: the image ingest says why
    paths["broken"] = broken
    return paths


@pytest.mark.parametrize("order", ORDERS)
def test_saved_hf_datasets_are_detected_by_their_features(hf_sets: dict[str, Path], order: str) -> None:
    detected = _detect(order, list(hf_sets.values()))["detected"]
    got = {kind: detected[str(path)] for kind, path in hf_sets.items()}
    assert {k: v for k, v in got.items() if k != "both"} == {
        "audio": "audio",
        "text": "text",
        "image": "image",
        "pixels": "image",
        "broken": "image",
    }
    assert got["both"] == (
        f"error: {hf_sets['both']}: could be read as audio or image data; pass --modality (audio, image) to say which"
    )


def test_hf_feature_rules(hf_sets: dict[str, Path]) -> None:
    from genforge.data.audio.sources import claims as audio_claims
    from genforge.data.sources.hf import holds_media, is_image_dataset, spec_features
    from genforge.data.text.sources import claims as text_claims

    claims = {
        kind: (audio_claims(str(p)), text_claims(str(p)), is_image_dataset(str(p)))
        for kind, p in hf_sets.items()
    }
    assert claims == {  # (audio, text, image)
        "audio": (True, False, False),
        "text": (False, True, False),
        "image": (False, False, True),
        "pixels": (False, False, True),
        "both": (True, False, True),
        "broken": (False, False, False),
    }
    assert spec_features(str(hf_sets["broken"])) is None
    assert not holds_media(spec_features(str(hf_sets["text"])))


def test_lazy_imports_on_first_call_only() -> None:
    from genforge.data.text.config import TextIngestConfig

    missing = ingesters.lazy("genforge.no_such_module", "f")  # nothing imported yet: no error
    with pytest.raises(ModuleNotFoundError, match="genforge.no_such_module"):
        missing()
    assert ingesters.lazy("os.path", "join")("a", "b") == os.path.join("a", "b")
    assert ingesters.lazy_value("genforge.data.text.config", "TextIngestConfig")() is TextIngestConfig
    assert ingesters.get("text").config() is TextIngestConfig  # the class, not an instance
    assert ingesters.get("audio").config().__name__ == "AudioIngestConfig"
    assert ingesters.get("image").config().__name__ == "IngestConfig"


def test_hf_names_are_detected_by_their_features_loaded_once(
    hf_sets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    from genforge.data.sources import hf

    loads: list[str] = []

    def load_parts(spec: str, split: str | None = None) -> dict:
        loads.append(spec)
        loaded = datasets.load_from_disk(str(hf_sets[spec.rsplit("/", 1)[1]]))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}

    monkeypatch.setattr(hf, "load_parts", load_parts)
    monkeypatch.setattr(hf, "_NAMED_FEATURES", {})
    assert ingesters.resolve("hf:someone/audio") == "audio" and loads == ["hf:someone/audio"]
    assert ingesters.resolve("hf:someone/pixels") == "image"
    assert ingesters.resolve("hf:someone/text") == "text"
    assert loads == ["hf:someone/audio", "hf:someone/pixels", "hf:someone/text"]  # one load per name
