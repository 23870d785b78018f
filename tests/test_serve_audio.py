"""The service on audio runs (deploy/audio.py), on a real loopback server with tiny test-only audio
models: WAV / JSON / npy output, determinism per seed under micro-batching, classes, speakers and
the speaker allow-list, /v1/models, the 4xx answers, and /v1/enhance on a restoration run.

`serve-audio-toy` is a tiny 1-D generator (linear -> transposed conv -> conv, output (n, 1, T) in
[-1, 1]) with the latents hook (`noise`, `sample(latents=)`), optionally class- and
speaker-conditional; `serve-audio-toy-restore` is a restoration model (task "restore") whose
`restore` takes clips of any length. Importing this module registers them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from genforge.audio.resample import resample
from genforge.audio.wav import encode_wav
from genforge.deploy.audio import GAP_SECONDS, AudioEngine, allowed_speakers
from genforge.deploy.config import ServeConfig
from genforge.deploy.engine import GenerateJob
from genforge.deploy.service import create_app
from genforge.models.base import GenerativeModel
from genforge.models.pipeline import load_pipeline, save_model
from genforge.models.registry import MODELS
from test_serve_models import serving

RATE = 8000
LENGTH = 800  # 0.1 s
PCM16 = 1.0 / 32767  # one step of a 16-bit WAV


@dataclass
class AudioToyConfig:
    sample_rate: int = RATE
    length: int = LENGTH  # a multiple of 16
    num_classes: int = 0
    num_speakers: int = 0
    latent_dim: int = 16
    delay_ms: float = 0.0  # each forward pass sleeps this long (so concurrent requests pile up)


class AudioToy(GenerativeModel):
    family = "audio-toy"
    modality = "audio"
    config_class = AudioToyConfig

    def __init__(self, config: AudioToyConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        self.speaker_conditional = c.num_speakers > 0
        self.frames = c.length // 16
        self.net = nn.Linear(c.latent_dim, 32 * self.frames)
        self.up = nn.ConvTranspose1d(32, 8, 32, stride=16, padding=8)  # frames * 16 samples
        self.out = nn.Conv1d(8, 1, 9, padding=4)
        self.embed = nn.Embedding(max(1, c.num_classes), c.latent_dim)
        self.speaker = nn.Embedding(max(1, c.num_speakers), c.latent_dim)
        self.forward_sizes: list[int] = []  # batch size of every forward pass, for the tests

    def noise(self, n: int, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator)

    def decode(self, z: torch.Tensor, labels=None, speakers=None) -> torch.Tensor:
        if self.conditional:
            z = z + self.embed(labels)
        if self.speaker_conditional:
            z = z + self.speaker(torch.as_tensor(speakers, dtype=torch.long))
        h = torch.tanh(self.net(z)).view(-1, 32, self.frames)
        return torch.tanh(self.out(torch.relu(self.up(h))))  # (n, 1, T)

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, speakers=None, latents=None, **options):
        if options:
            raise ValueError(f"unknown options {options}")
        z = self.noise(n, generator) if latents is None else latents
        self.forward_sizes.append(n)
        if self.config.delay_ms:
            time.sleep(self.config.delay_ms / 1000)
        return self.decode(z, labels, speakers)


class AudioToyRestore(AudioToy):
    task = "restore"

    def __init__(self, config: AudioToyConfig):
        super().__init__(config)
        self.filter = nn.Conv1d(1, 1, 9, padding=4)

    @torch.no_grad()
    def restore(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_sizes.append(len(x))
        return torch.tanh(self.filter(x[:, None]))[:, 0]

    def sample(self, n, **kwargs):
        raise NotImplementedError("a restoration model does not sample")


for _name, _cls in (("serve-audio-toy", AudioToy), ("serve-audio-toy-restore", AudioToyRestore)):
    if _name not in MODELS:
        MODELS.register(_name, _cls)

SPEAKERS = ["ann", "bob", "cy"]


def make_audio_run(directory: Path, name: str = "serve-audio-toy", seed: int = 0, **config: Any) -> Path:
    """A run directory holding audio model `name` with random weights."""
    torch.manual_seed(seed)
    cls = MODELS.get(name)
    model = cls(cls.config_class(**config))
    dataset = {"fingerprint": "a" * 64, "modality": "audio", "sample_rate": RATE, "clip_length": LENGTH}
    if model.conditional:
        dataset["class_names"] = [f"digit{i}" for i in range(model.config.num_classes)]
    if model.speaker_conditional:
        dataset["speaker_names"] = SPEAKERS[: model.config.num_speakers]
    save_model(model, name, directory, {"dataset": dataset, "step": 3, "ema": False})
    return directory


def post(server, body, path="/v1/generate", **kwargs):
    return httpx.post(server.url + path, json=body, timeout=30, **kwargs)


def wav(content: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(content), dtype="float32")
    return audio, rate


def npy(resp) -> np.ndarray:
    return np.load(io.BytesIO(resp.content), allow_pickle=False)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    run = make_audio_run(tmp_path_factory.mktemp("audio"))
    with serving(run, max_n=16) as server:
        yield server, load_pipeline(run)


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    run = make_audio_run(tmp_path_factory.mktemp("voices"), num_classes=3, num_speakers=3)
    with serving(run) as server:
        yield server, load_pipeline(run)


# generation ---------------------------------------------------------------------------------------


def test_one_clip_is_a_wav_at_the_run_rate(plain):
    server, pipe = plain
    resp = post(server, {"n": 1, "seed": 3})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "audio/wav" and resp.headers["x-genforge-seed"] == "3"
    audio, rate = wav(resp.content)
    assert rate == RATE and audio.shape == (LENGTH,)
    expected, labels = pipe.generate(1, seed=3)
    assert labels is None and np.abs(expected).max() > 0.05  # a real signal, not silence
    assert np.abs(audio - expected[0]).max() <= PCM16
    assert post(server, {"n": 1, "seed": 3}).content == resp.content  # same seed, same bytes


def test_many_clips_share_one_wav_with_gaps_and_json_has_one_each(plain):
    server, _ = plain
    resp = post(server, {"n": 3, "seed": 5})
    gap = int(round(GAP_SECONDS * RATE))
    assert resp.headers["x-genforge-clips"] == "3" and resp.headers["x-genforge-gap-samples"] == str(gap)
    assert resp.headers["x-genforge-clip-samples"] == str(LENGTH)
    track, rate = wav(resp.content)
    assert rate == RATE and track.shape == (3 * LENGTH + 2 * gap,)
    body = post(server, {"n": 3, "seed": 5, "format": "json"}).json()
    assert body["seed"] == 5 and body["sample_rate"] == RATE and body["shape"] == [3, LENGTH]
    assert body["labels"] is None and body["speakers"] is None
    clips = [wav(base64.b64decode(s)) for s in body["audio"]]
    assert all(r == RATE and c.shape == (LENGTH,) for c, r in clips)
    for i, (clip, _) in enumerate(clips):
        start = i * (LENGTH + gap)
        assert np.array_equal(track[start : start + LENGTH], clip)
        if i < 2:
            assert not track[start + LENGTH : start + LENGTH + gap].any()  # silence between clips


def test_npy_is_float32_clips_close_to_the_pipeline(plain):
    server, pipe = plain
    resp = post(server, {"n": 5, "seed": 11, "format": "npy"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
    got = npy(resp)
    expected, _ = pipe.generate(5, seed=11)
    assert got.dtype == np.float32 and got.shape == (5, LENGTH)
    # the service runs fixed-size chunks; the pipeline one pass of 5: equal up to float rounding
    assert np.abs(got - expected).max() < 1e-5
    other = npy(post(server, {"n": 5, "seed": 12, "format": "npy"}))
    assert np.abs(other - got).max() > 0.01
    # the first k clips of a seed do not depend on how many were asked for
    assert np.array_equal(npy(post(server, {"n": 2, "seed": 11, "format": "npy"})), got[:2])


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/generate", json=b) for b in bodies))


def test_same_seed_same_bytes_alone_or_in_a_batch(tmp_path):
    """24 concurrent requests are merged into a few passes; each answer is byte for byte the
    answer the same request gets alone."""
    run = make_audio_run(tmp_path, num_classes=3, num_speakers=3, delay_ms=30)
    bodies = [
        {"n": 1 + i % 3, "seed": 100 + i, "class": i % 3, "speaker": i % 3, "format": "wav"}
        for i in range(24)
    ]
    with serving(run, max_batch=64, max_wait_ms=20) as server:
        model = server.app.state.genforge.engine.model
        alone = [post(server, b) for b in bodies]
        model.forward_sizes.clear()
        together = asyncio.run(_concurrent(server.url, bodies))
        sizes = list(model.forward_sizes)
    assert [r.status_code for r in together] == [200] * len(bodies)
    for body, a, b in zip(bodies, alone, together, strict=True):
        assert a.content == b.content, body
        assert b.headers["x-genforge-labels"] == ",".join([str(body["class"])] * body["n"])
    # merged: fewer passes than requests, every pass exactly one chunk
    assert len(sizes) < len(bodies) and set(sizes) == {AudioEngine.chunk}, sizes


def test_chunked_engine_is_batch_invariant(tmp_path):
    """The engine on its own: a job's clips are bitwise the same alone and after other jobs,
    at every position within and across chunks."""
    engine = AudioEngine(load_pipeline(make_audio_run(tmp_path, num_speakers=2)))
    job = GenerateJob(3, 42, None, (), (1, 0, 1))
    alone = engine.run([job])[0].images
    for before in (1, 5, 7, 9):
        other = GenerateJob(before, 7, None, (), tuple(i % 2 for i in range(before)))
        assert np.array_equal(engine.run([other, job])[1].images, alone), before


def test_classes_speakers_and_their_errors(voices):
    server, pipe = voices
    r = post(server, {"n": 2, "seed": 1, "class": 2, "speaker": "bob", "format": "npy"})
    assert r.status_code == 200, r.text
    assert r.headers["x-genforge-labels"] == "2,2" and r.headers["x-genforge-speakers"] == "1,1"
    expected, _ = pipe.generate(2, seed=1, class_label=2, speaker="bob")
    assert np.abs(npy(r) - expected).max() < 1e-5
    by_id = post(server, {"n": 2, "seed": 1, "class": 2, "speaker": 1, "format": "npy"})
    assert np.array_equal(npy(by_id), npy(r))
    other = post(server, {"n": 2, "seed": 1, "class": 2, "speaker": 0, "format": "npy"})
    assert np.abs(npy(other) - npy(r)).max() > 1e-3  # the speaker changes the clip
    mixed = post(server, {"n": 4, "seed": 1, "format": "json"}).json()
    assert mixed["labels"] == [0, 1, 2, 0] and mixed["speakers"] == [0, 1, 2, 0]  # in turn
    for body, field, status in [
        ({"speaker": "zed"}, "speaker", 422),
        ({"speaker": 3}, "speaker", 422),
        ({"class": 3}, "class", 422),
    ]:
        bad = post(server, {"n": 1, **body})
        assert bad.status_code == status and bad.json()["field"] == field, bad.text
    assert "ann, bob, cy" in post(server, {"n": 1, "speaker": "zed"}).json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),  # over max_n
        ({"n": 1, "format": "png"}, "format"),
        ({"n": 1, "seed": -1}, "seed"),
        ({"n": 1, "steps": 10}, "steps"),  # no diffusion model
        ({"n": 1, "class": 1}, "class"),  # nor conditional
        ({"n": 1, "speaker": 0}, "speaker"),  # nor speaker-conditional
        ({"n": 1, "voice": "x"}, "voice"),
    ],
)
def test_bad_generate_requests_are_422_naming_the_field(plain, body, field):
    server, _ = plain
    resp = post(server, body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == field and field in resp.json()["error"]


def test_models_reports_audio_fields(plain, voices):
    server, _ = plain
    info = httpx.get(server.url + "/v1/models").json()
    assert info["modality"] == "audio" and info["task"] == "generate" and info["model"] == "serve-audio-toy"
    assert info["sample_rate"] == RATE and info["clip_length"] == LENGTH and info["clip_seconds"] == 0.1
    assert info["speaker_conditional"] is False and info["speakers"] == [] and info["conditional"] is False
    assert info["formats"] == ["wav", "json", "npy"] and info["limits"]["max_audio_seconds"] == 30.0
    assert info["batching"]["enabled"] is True and info["batching"]["chunk"] == AudioEngine.chunk
    assert info["data"][0]["id"] == "serve-audio-toy"
    info = httpx.get(voices[0].url + "/v1/models").json()
    assert info["class_names"] == ["digit0", "digit1", "digit2"] and info["num_speakers"] == 3
    assert info["speakers"] == [{"id": 0, "name": "ann"}, {"id": 1, "name": "bob"}, {"id": 2, "name": "cy"}]
    assert info["speaker_allowlist"] is None
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/generate", "/v1/enhance", "/v1/models"} <= set(schema["paths"])
    assert "/v1/restore" not in schema["paths"]
    assert "speaker" in json.dumps(schema["components"]["schemas"]["AudioGenerateRequest"])


def test_speaker_allow_list(tmp_path):
    run = make_audio_run(tmp_path, num_classes=2, num_speakers=3)
    with serving(run, allowed_speakers=["cy", "0"]) as server:
        info = httpx.get(server.url + "/v1/models").json()
        assert info["speakers"] == [{"id": 2, "name": "cy"}, {"id": 0, "name": "ann"}]
        assert info["speaker_allowlist"] == ["cy", "0"]
        for speaker in ("bob", 1, "1", "nobody"):  # refused alike, known to the model or not
            resp = post(server, {"n": 1, "speaker": speaker})
            assert resp.status_code == 403 and resp.json()["field"] == "speaker", speaker
            assert "allow-list" in resp.json()["error"]
        assert post(server, {"n": 1, "speaker": "cy"}).status_code == 200
        assert post(server, {"n": 1, "speaker": "ann"}).status_code == 200
        assert post(server, {"n": 1, "speaker": 2}).status_code == 200
        default = post(server, {"n": 3, "seed": 0, "format": "json"}).json()
        assert default["speakers"] == [2, 0, 2]  # only allowed voices when none is named


def test_bad_allow_list_fails_the_load_with_a_clear_error(tmp_path):
    voiced = load_pipeline(make_audio_run(tmp_path / "v", num_speakers=2))
    assert allowed_speakers(voiced, []) is None
    assert allowed_speakers(voiced, ["bob", "0", "ann"]) == (1, 0)
    for entries, words in [(["dave"], "unknown speaker 'dave'"), (["2"], "unknown speaker '2'")]:
        app = create_app(ServeConfig(run_dir=str(voiced.path), allowed_speakers=entries, warmup=False))
        state = app.state.genforge
        state.start()
        assert not state.ready.is_set() and words in state.load_error and "ann, bob" in state.load_error
    mute = make_audio_run(tmp_path / "m")
    state = create_app(ServeConfig(run_dir=str(mute), allowed_speakers=["0"], warmup=False)).state.genforge
    state.start()
    assert "not speaker-conditional" in state.load_error


def test_metrics_count_clips_and_seconds(plain):
    server, _ = plain

    def value(text: str, name: str) -> float:
        line = next((x for x in text.splitlines() if x.startswith(name + '{task="generate"} ')), None)
        return 0.0 if line is None else float(line.rsplit(" ", 1)[1])

    before = httpx.get(server.url + "/metrics").text
    post(server, {"n": 3, "seed": 0, "format": "npy"})
    after = httpx.get(server.url + "/metrics").text
    assert value(after, "genforge_audio_clips_total") - value(before, "genforge_audio_clips_total") == 3
    seconds = value(after, "genforge_audio_seconds_total") - value(before, "genforge_audio_seconds_total")
    assert seconds == pytest.approx(0.3)


# enhancement --------------------------------------------------------------------------------------


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory):
    root = tmp_path_factory.mktemp("enhance")
    run = make_audio_run(root / "run", "serve-audio-toy-restore")
    with serving(run, max_audio_seconds=2.0) as server:
        yield server, load_pipeline(run), root


def expected_restore(pipe, clip: np.ndarray) -> np.ndarray:
    return pipe.restore(clip)


def test_enhance_round_trip_raw_and_multipart(enhancer):
    server, pipe, root = enhancer
    before = snapshot(root)
    upload = encode_wav(tone(0.5, RATE)[:, 0], RATE)
    sent, _ = wav(upload)  # what the server decodes: the 16-bit samples
    raw = httpx.post(server.url + "/v1/enhance", content=upload, headers={"Content-Type": "audio/wav"})
    assert raw.status_code == 200, raw.text
    assert (
        raw.headers["content-type"] == "audio/wav" and raw.headers["x-genforge-input-sample-rate"] == "8000"
    )
    out, rate = wav(raw.content)
    assert rate == RATE and out.shape == sent.shape  # same length as the upload
    assert np.abs(out - pipe.restore(sent)).max() <= PCM16
    assert np.abs(out - sent).max() > 0.01  # the model did something
    files = {"audio": ("noisy.wav", upload, "audio/wav")}
    multi = httpx.post(server.url + "/v1/enhance", files=files)
    assert multi.status_code == 200 and multi.content == raw.content
    as_npy = httpx.post(
        server.url + "/v1/enhance",
        content=upload,
        params={"format": "npy"},
        headers={"Content-Type": "application/octet-stream"},
    )
    assert np.abs(npy(as_npy)[0] - pipe.restore(sent)).max() < 1e-6 and npy(as_npy).shape == (1, len(sent))
    assert snapshot(root) == before  # nothing written, in the run or beside it


def test_enhance_resamples_other_rates_and_mixes_down(enhancer):
    server, pipe, _ = enhancer
    stereo = tone(0.5, 16000, channels=2)
    upload = encode_wav(stereo, 16000)
    resp = httpx.post(server.url + "/v1/enhance", content=upload, headers={"Content-Type": "audio/x-wav"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-genforge-input-sample-rate"] == "16000"
    assert resp.headers["x-genforge-sample-rate"] == str(RATE)
    out, rate = wav(resp.content)
    sent, _ = wav(upload)
    mono = resample(sent.mean(axis=1), 16000, RATE)
    assert rate == RATE and out.shape == (4000,) and mono.shape == (4000,)
    assert np.abs(out - pipe.restore(mono)).max() <= PCM16


def test_enhance_refuses_bad_uploads(enhancer):
    server, _, root = enhancer
    before = snapshot(root)
    url = server.url + "/v1/enhance"

    def send(content: bytes, ctype: str = "audio/wav") -> httpx.Response:
        return httpx.post(url, content=content, headers={"Content-Type": ctype})

    text = send(b"hello", "text/plain")
    assert text.status_code == 415 and "audio/wav" in text.json()["error"]
    junk = send(b"RIFF....not really a wave file at all")
    assert junk.status_code == 422 and "not an audio file" in junk.json()["error"]
    assert junk.json()["field"] == "audio"
    named = httpx.post(url, files={"audio": ("notes.txt", b"just some text", "text/plain")})
    assert named.status_code == 422 and "notes.txt" in named.json()["error"]
    assert send(b"").status_code == 400
    assert send(encode_wav(np.zeros(0, np.float32), RATE)).status_code == 400
    long = send(encode_wav(tone(2.5, RATE)[:, 0], RATE))
    assert long.status_code == 413 and "2.5 s" in long.json()["error"] and "2 s" in long.json()["error"]
    nan = encode_wav(np.zeros(100, np.float32), RATE, subtype="FLOAT")
    buf = io.BytesIO()
    sf.write(buf, np.array([0.1, np.nan, 0.2], np.float32), RATE, subtype="FLOAT", format="WAV")
    assert send(nan).status_code == 200  # float WAVs are fine...
    bad = send(buf.getvalue())
    assert bad.status_code == 422 and "non-finite" in bad.json()["error"]  # ...unless not finite
    wrong_field = httpx.post(url, files={"file": ("x.wav", encode_wav(np.zeros(10), RATE), "audio/wav")})
    assert wrong_field.status_code == 422 and wrong_field.json()["field"] == "audio"
    assert post(server, {"n": 1}).status_code == 409  # no generation on an enhancement run
    assert httpx.get(server.url + "/v1/models").json()["task"] == "restore"
    assert snapshot(root) == before


def test_enhance_on_a_generation_run_is_409(plain):
    server, _ = plain
    resp = httpx.post(
        server.url + "/v1/enhance",
        content=encode_wav(np.zeros(800), RATE),
        headers={"Content-Type": "audio/wav"},
    )
    assert resp.status_code == 409 and "/v1/generate" in resp.json()["error"]


# the real audio families ----------------------------------------------------------------------------


def family_run(path: Path, name: str, **overrides: Any) -> Path:
    """A tiny untrained model of a shipped audio family (skips until the family exists)."""
    pytest.importorskip("genforge.models.audio.wavegan")
    torch.manual_seed(0)
    cls = MODELS.get(name)
    model = cls(cls.default_config(RATE, 1600, **overrides))
    with torch.no_grad():  # zero-initialised output layers would make every clip silent
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    dataset = {"speaker_names": SPEAKERS[:2], "class_names": ["0", "1", "2"], "sample_rate": RATE}
    save_model(model, name, path, {"dataset": dataset, "step": 0})
    return path


def test_wavegan_merges_and_stays_byte_identical(tmp_path):
    run = family_run(tmp_path, "wavegan", num_classes=3, num_speakers=2, g_widths=[32, 16], d_widths=[8, 16])
    bodies = [{"n": 1 + i % 2, "seed": i, "class": i % 3, "speaker": i % 2} for i in range(16)]
    with serving(run, max_batch=64, max_wait_ms=20) as server:
        state = server.app.state.genforge
        assert state.engine.mergeable and httpx.get(server.url + "/v1/models").json()["options"] == []
        alone = [post(server, b) for b in bodies]
        passes = state.metrics.batch_requests.count()
        together = asyncio.run(_concurrent(server.url, bodies))
        merged_passes = state.metrics.batch_requests.count() - passes
    assert merged_passes < len(bodies)
    for body, a, b in zip(bodies, alone, together, strict=True):
        assert a.status_code == b.status_code == 200 and a.content == b.content, body
        assert wav(b.content)[0].shape == (1600 * body["n"] + int(GAP_SECONDS * RATE) * (body["n"] - 1),)


def test_diffwave_takes_steps_and_guidance(tmp_path):
    run = family_run(tmp_path, "diffwave", num_classes=3, num_speakers=2, channels=8, layers=2, cycle=2,
                     timesteps=50, sample_steps=4)  # fmt: skip
    with serving(run) as server:
        info = httpx.get(server.url + "/v1/models").json()
        assert info["options"] == ["steps", "guidance"] and info["batching"]["enabled"] is False
        body = {"n": 2, "seed": 4, "class": 1, "speaker": "bob", "steps": 3, "guidance": 1.5, "format": "npy"}
        resp = post(server, body)
        assert resp.status_code == 200, resp.text
        expected, _ = load_pipeline(run).generate(
            2, seed=4, class_label=1, speaker="bob", steps=3, guidance=1.5
        )
        # the pipeline's clips, up to float rounding (another thread, another OpenMP team size)
        # that DDIM's first step magnifies: measured 1.6e-5
        assert np.abs(npy(resp) - expected).max() < 1e-4
        assert post(server, body).content == resp.content  # the service itself: same bytes
        assert not np.array_equal(npy(post(server, {**body, "steps": 2})), expected)
        assert post(server, {**body, "steps": 1001}).json()["field"] == "steps"  # over max_steps


def test_serve_cli_passes_the_audio_options(tmp_path, monkeypatch, capsys):
    """`genforge serve RUN --allow-speaker ... --max-audio-seconds ...` reaches the service config."""
    from cli_runner import run_cli

    seen: list[ServeConfig] = []

    class Server:  # stands in for the uvicorn server: records its config, serves nothing
        url, http, loop = "http://127.0.0.1:1", "h11", "asyncio"

        def __init__(self, config, pipeline, log_level="warning"):
            seen.append(config)

        def run(self):
            pass

    monkeypatch.setattr("genforge.deploy.server.ServiceServer", Server)
    run = make_audio_run(tmp_path, num_speakers=3)
    args = ("serve", run, "--allow-speaker", "bob", "--allow-speaker", "2", "--max-audio-seconds", "12.5")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert seen[0].allowed_speakers == ["bob", "2"] and seen[0].max_audio_seconds == 12.5
    code, _, err = run_cli(monkeypatch, capsys, "serve", run, "--max-audio-seconds", "0")
    assert code != 0 and "max_audio_seconds must be > 0" in err


def test_denoiser_enhances_an_upload(tmp_path):
    pytest.importorskip("genforge.models.audio.denoiser")
    run = family_run(tmp_path / "run", "denoiser", hidden=16, blocks=2)
    upload = encode_wav(tone(0.7, 16000)[:, 0], 16000)  # resampled to the run's 8 kHz
    with serving(run) as server:  # the warm-up enhances a silent clip
        resp = httpx.post(server.url + "/v1/enhance", files={"audio": ("noisy.wav", upload, "audio/wav")})
        assert resp.status_code == 200, resp.text
        out, rate = wav(resp.content)
        pipe = load_pipeline(run)
        sent, _ = wav(upload)
        assert rate == RATE and out.shape == (5600,)
        assert np.abs(out - pipe.restore(resample(sent, 16000, RATE))).max() <= 2 * PCM16
        assert httpx.get(server.url + "/v1/models").json()["family"] == "denoiser"
