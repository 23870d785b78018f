"""The gallery page in a real headless Chromium: Generate shows the grid and the metrics table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_serve_models import METRICS, make_run, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


def test_generate_shows_grid_and_metrics(browser, tmp_path):
    run = make_run(tmp_path / "run", num_classes=3, metrics=METRICS)
    with serving(run) as server:
        page = browser.new_page(viewport={"width": 1100, "height": 750})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model-name').textContent.startsWith('serve-toy')")
        assert page.is_visible("#class-field") and not page.is_visible(
            "#steps-field"
        )  # conditional, no diffusion
        page.select_option("#class", "2")
        page.fill("#seed", "42")
        page.fill("#n", "9")
        page.click("#generate")
        page.wait_for_function(
            "() => { const im = document.getElementById('grid'); return !im.hidden && im.complete && im.naturalWidth > 0; }",
            timeout=30_000,
        )
        # a 3x3 grid of 8 px images with 2 px padding
        assert page.evaluate("document.getElementById('grid').naturalWidth") == 3 * 10 + 2
        assert "seed 42" in page.inner_text("#status")
        assert page.is_visible("#metrics")
        rows = page.eval_on_selector_all("#metrics tbody tr", "rs => rs.map(r => r.innerText.split('\\t'))")
        assert ["fid", "12.50"] in rows and ["kid.mean", "0.01000"] in rows
        shot = os.environ.get("GENFORGE_GALLERY_SCREENSHOT")
        page.screenshot(path=shot or str(tmp_path / "gallery.png"), full_page=True)
        assert not errors, errors


def test_api_key_prompt(browser, tmp_path):
    with serving(make_run(tmp_path / "run"), api_key="k3y") as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#key-field", state="visible")
        page.fill("#api-key", "k3y")
        page.click("#generate")
        page.wait_for_function(
            "() => { const im = document.getElementById('grid'); return !im.hidden && im.naturalWidth > 0; }",
            timeout=30_000,
        )
        assert page.is_visible("#metrics-empty")  # this run has no metrics.json


def test_text_prompt_box_streams_the_completion(browser, tmp_path):
    """A text run's page: type a prompt, press Generate, the completion streams into the page and
    is the API's completion for the same request."""
    import httpx

    from test_serve_text import make_text_run

    with serving(make_text_run(tmp_path / "text"), api_key="k3y") as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_selector("#key-field", state="visible")  # 401 on /v1/models: asks for the key
        page.fill("#api-key", "k3y")
        page.fill("#prompt", "JULIET:")
        page.fill("#max-tokens", "30")
        page.fill("#temperature", "0.8")
        page.fill("#top-k", "5")
        page.fill("#top-p", "0.9")
        page.fill("#seed", "7")
        page.click("#generate")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('ended by')", timeout=30_000
        )
        shown = page.inner_text("#generated")
        body = {
            "prompt": "JULIET:",
            "max_tokens": 30,
            "temperature": 0.8,
            "top_k": 5,
            "top_p": 0.9,
            "seed": 7,
        }
        api = httpx.post(
            server.url + "/v1/completions", json=body, headers={"Authorization": "Bearer k3y"}
        ).json()
        assert shown == api["choices"][0]["text"] and len(shown) == 30
        assert page.inner_text("#shown-prompt") == "JULIET:"
        assert "seed 7" in page.inner_text("#status") and "context 32" in page.inner_text("#model-summary")
        assert not errors, errors


def test_audio_page_plays_generated_clips(browser, tmp_path):
    """An audio run's page: pick a class and a speaker, press Generate, one <audio> player per
    clip appears and its WAV loads (duration > 0, the clip's length); the captions name them."""
    from test_serve_audio import LENGTH, RATE, make_audio_run

    run = make_audio_run(tmp_path / "audio", num_classes=3, num_speakers=3)
    with serving(run) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_function(
            "document.getElementById('model-name').textContent.startsWith('serve-audio-toy')"
        )
        assert page.is_visible("#class-field") and page.is_visible("#speaker-field")
        assert "8000 Hz" in page.inner_text("#model-summary")
        page.select_option("#class", "2")
        page.select_option("#speaker", "1")
        page.fill("#seed", "5")
        page.fill("#n", "2")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#clips audio').length === 2", timeout=30_000)
        durations = page.evaluate(
            """() => Promise.all([...document.querySelectorAll('#clips audio')].map((el) =>
                 el.readyState >= 1 ? el.duration : new Promise((ok, fail) => {
                   el.addEventListener('loadedmetadata', () => ok(el.duration));
                   el.addEventListener('error', () => fail(new Error('audio failed to load')));
                 })))"""
        )
        assert durations == [pytest.approx(LENGTH / RATE, abs=1e-3)] * 2
        captions = page.eval_on_selector_all("#clips figcaption", "cs => cs.map(c => c.textContent)")
        assert captions == ["clip 1 · class digit2 · speaker bob", "clip 2 · class digit2 · speaker bob"]
        assert "seed 5 · 2 clips" in page.inner_text("#status")
        assert not errors, errors


def test_audio_page_enhances_an_upload(browser, tmp_path):
    """An enhancement run's page: upload a WAV, the input and the enhanced clip both play."""
    import numpy as np

    from genforge.audio.wav import encode_wav
    from test_serve_audio import RATE, make_audio_run

    run = make_audio_run(tmp_path / "enhance", "serve-audio-toy-restore")
    upload = encode_wav(0.3 * np.sin(np.arange(4000) * 0.3), RATE)  # 0.5 s
    with serving(run) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_selector("#enhance-form", state="visible")
        assert not page.is_visible("#controls")  # nothing to generate
        page.set_input_files(
            "#upload", files=[{"name": "noisy.wav", "mimeType": "audio/wav", "buffer": upload}]
        )
        page.click("#enhance")
        page.wait_for_function("document.querySelectorAll('#clips audio').length === 2", timeout=30_000)
        durations = page.evaluate(
            """() => Promise.all([...document.querySelectorAll('#clips audio')].map((el) =>
                 el.readyState >= 1 ? el.duration : new Promise((ok) =>
                   el.addEventListener('loadedmetadata', () => ok(el.duration)))))"""
        )
        assert durations == [pytest.approx(0.5, abs=1e-3)] * 2
        captions = page.eval_on_selector_all("#clips figcaption", "cs => cs.map(c => c.textContent)")
        assert captions == ["input · noisy.wav", "enhanced · 8000 Hz"]
        assert not errors, errors
