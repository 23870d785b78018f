"""The parts every gallery page shares (deploy/static/common.js), in a real headless Chromium: each
page gets the header, the API key field, the status line and the metrics/model tables exactly
once and in their places, and a refused request shows the service's message and frees the button."""

from __future__ import annotations

from pathlib import Path

from test_gallery_browser import browser  # noqa: F401  (the Chromium fixture)
from test_serve_models import METRICS, make_run, serving

# id -> the element it must be; each exactly once on every page
SHARED = {
    "model-name": "SPAN",
    "model-summary": "P",
    "key-field": "LABEL",
    "api-key": "INPUT",
    "status": "P",
    "metrics-empty": "P",
    "metrics": "TABLE",
    "model-info": "TABLE",
}

# the generating pages' form after the count field: the sampling fields (common.js) around their own
GENERATE_FORM = [
    "seed",
    "random-seed",
    "class-field",
    "steps-field",
    "guidance-field",
    "key-field",
    "generate",
]

LAYOUT = """() => ({
  counts: Object.fromEntries(IDS.map((id) => [id, document.querySelectorAll('#' + id).length])),
  tags: Object.fromEntries(IDS.map((id) => [id, (document.getElementById(id) || {}).tagName])),
  form: [...document.getElementById('controls').children].map((e) => e.id || e.querySelector('input, textarea').id),
  statusLastInPanel: document.querySelector('.controls').lastElementChild.id,
  header: document.querySelector('header h1').textContent,
  infoHeadings: [...document.querySelectorAll('.info h2')].map((h) => h.textContent),
  modelRows: [...document.querySelectorAll('#model-info tr')].map((r) => r.cells[0].textContent),
})"""


def _open(browser, url: str, name: str):  # noqa: F811
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_function(f"document.getElementById('model-name').textContent.startsWith('{name}')")
    return page, errors


def _layout(page) -> dict:
    return page.evaluate(LAYOUT.replace("IDS", repr(list(SHARED))))


def _check_shared_parts(layout: dict, name: str, form: list[str], middle: list[str], last: str) -> None:
    assert layout["counts"] == dict.fromkeys(SHARED, 1)
    assert layout["tags"] == SHARED
    assert layout["form"] == form  # the page's fields with the shared ones in their places
    assert layout["statusLastInPanel"] == "status"
    assert layout["header"].startswith(f"genforge {name} · step ")
    assert layout["infoHeadings"] == ["Metrics", "Model"]
    assert layout["modelRows"] == ["model", "family", "step", *middle, "dataset fingerprint", last]


def test_image_page_parts_and_a_refused_request(browser, tmp_path):  # noqa: F811
    run = make_run(tmp_path / "run", num_classes=3, metrics=METRICS)
    with serving(run, max_n=4) as server:
        page, errors = _open(browser, server.url, "serve-toy")
        _check_shared_parts(_layout(page), "serve-toy", ["n", *GENERATE_FORM], ["classes"], "micro-batching")
        assert page.inner_text("#model-summary").endswith("· dataset ffffffffffff")
        assert page.inner_text("#status") == "Ready."
        # over the server's max_n (past the field's own limit, as a script could send): a 422 with the reason
        page.evaluate("document.getElementById('n').removeAttribute('max')")
        page.fill("#n", "9")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').classList.contains('error')")
        assert page.inner_text("#status") == "n: at most 4 per request, got 9"
        assert page.is_enabled("#generate") and not page.is_visible("#key-field")  # not a 401
        assert not page.is_visible("#grid")
        page.fill("#n", "4")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('seed ')")
        assert "4 images" in page.inner_text("#status")
        assert not page.evaluate("document.getElementById('status').classList.contains('error')")
        assert not errors, errors


def test_audio_page_parts(browser, tmp_path):  # noqa: F811
    from test_serve_audio import make_audio_run

    run = make_audio_run(tmp_path / "audio", num_classes=3, num_speakers=3)
    with serving(run) as server:
        page, errors = _open(browser, server.url, "serve-audio-toy")
        _check_shared_parts(
            _layout(page),
            "serve-audio-toy",
            ["n", *GENERATE_FORM[:3], "speaker-field", *GENERATE_FORM[3:]],
            ["task", "sample rate", "classes", "speakers"],
            "micro-batching",
        )
        # the audio page's own styles now live in style.css: clips flow from the top left
        style = page.evaluate(
            "(() => { const s = getComputedStyle(document.querySelector('.output')); "
            "return [s.alignItems, s.justifyContent, getComputedStyle(document.getElementById('clips')).display]; })()"
        )
        assert style == ["flex-start", "flex-start", "flex"]
        assert not errors, errors


def test_text_page_parts(browser, tmp_path):  # noqa: F811
    from test_serve_text import make_text_run

    with serving(make_text_run(tmp_path / "text")) as server:
        page, errors = _open(browser, server.url, "gpt")
        text_form = ["prompt", "max-tokens", "temperature", "top-k", "top-p", "stop", "seed", "random-seed", "key-field",
                     "generate", "stop-button"]  # fmt: skip
        _check_shared_parts(
            _layout(page), "gpt", text_form, ["tokenizer", "context length"], "continuous batching"
        )
        assert not errors, errors


def test_pages_hold_only_their_own_markup():
    """The shared parts are written once, in common.js, not in each page."""
    static = Path(__file__).resolve().parents[1] / "src" / "genforge" / "deploy" / "static"
    shared_js = (static / "common.js").read_text()
    for page in ("index.html", "text.html", "audio.html"):
        html = (static / page).read_text()
        for part in SHARED:
            assert f'id="{part}"' not in html, (page, part)
            assert f'id="{part}"' in shared_js, part
        assert "<style" not in html, page
        for field in ("class-field", "steps-field", "guidance-field"):
            assert f'id="{field}"' not in html and f'id="{field}"' in shared_js, (page, field)
        # after the page's markup, before the page's own script
        assert html.index("</main>") < html.index("/static/common.js") < html.rindex("<script src=")
