"""The HTTP service on a real loopback server: formats, determinism, errors, auth, metrics, restore."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from genforge.deploy.client import Client, ServiceError
from genforge.models.pipeline import from_uint8, load_pipeline, to_uint8
from genforge.train.samples import make_grid
from test_serve_models import METRICS, make_run, serving


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("toy"), metrics=METRICS)
    with serving(run, max_n=32, max_body_bytes=4096) as server:
        yield server, load_pipeline(run)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("cond"), num_classes=4)
    with serving(run) as server:
        yield server, load_pipeline(run)


def post(server, body, **kwargs):
    return httpx.post(server.url + "/v1/generate", json=body, timeout=30, **kwargs)


def npy(resp) -> np.ndarray:
    return np.load(io.BytesIO(resp.content), allow_pickle=False)


def test_npy_equals_pipeline_and_is_deterministic(toy):
    server, pipe = toy
    a = post(server, {"n": 5, "seed": 11, "format": "npy"})
    assert a.status_code == 200 and a.headers["content-type"] == "application/octet-stream"
    expected, _ = pipe.generate(5, seed=11)
    assert np.array_equal(npy(a), expected) and npy(a).dtype == np.uint8
    assert np.array_equal(npy(post(server, {"n": 5, "seed": 11, "format": "npy"})), expected)
    other = npy(post(server, {"n": 5, "seed": 12, "format": "npy"}))
    assert not np.array_equal(other, expected)
    # the first k images of a seed do not depend on how many were asked for
    assert np.array_equal(npy(post(server, {"n": 2, "seed": 11, "format": "npy"})), expected[:2])


def test_png_grid_and_json_images(toy):
    server, pipe = toy
    expected, _ = pipe.generate(6, seed=3)
    png = post(server, {"n": 6, "seed": 3})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-genforge-seed"] == "3"
    grid = np.asarray(Image.open(io.BytesIO(png.content)))
    assert np.array_equal(grid, make_grid(expected)[..., 0])
    body = post(server, {"n": 6, "seed": 3, "format": "json"}).json()
    assert body["seed"] == 3 and body["labels"] is None and body["shape"] == [6, 8, 8, 1]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in body["images"]])
    assert np.array_equal(decoded, expected[..., 0])


def test_seed_is_chosen_and_reported_when_omitted(toy):
    server, pipe = toy
    body = post(server, {"n": 2, "format": "json"}).json()
    again = post(server, {"n": 2, "seed": body["seed"], "format": "json"}).json()
    assert again["images"] == body["images"]


def test_conditional_classes(conditional):
    server, pipe = conditional
    resp = post(server, {"n": 3, "seed": 5, "class": 2, "format": "json"}).json()
    assert resp["labels"] == [2, 2, 2]
    r = post(server, {"n": 3, "seed": 5, "class": 2, "format": "npy"})
    assert r.headers["x-genforge-labels"] == "2,2,2"
    assert np.array_equal(npy(r), pipe.generate(3, seed=5, class_label=2)[0])
    mixed = post(server, {"n": 6, "seed": 5, "format": "json"}).json()
    assert mixed["labels"] == [0, 1, 2, 3, 0, 1]
    bad = post(server, {"n": 1, "class": 4})
    assert bad.status_code == 422 and bad.json()["field"] == "class" and "0..3" in bad.json()["error"]
    info = httpx.get(server.url + "/v1/models").json()
    assert (
        info["conditional"] and info["num_classes"] == 4 and info["class_names"] == ["c0", "c1", "c2", "c3"]
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": 33}, "n"),  # over max_n
        ({"n": "3"}, "n"),  # strict: a string is not a count
        ({"n": 1, "format": "gif"}, "format"),
        ({"n": 1, "seed": -1}, "seed"),
        ({"n": 1, "steps": 10}, "steps"),  # the toy is no diffusion model
        ({"n": 1, "class": 1}, "class"),  # nor conditional
        ({"n": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_422_naming_the_field(toy, body, field):
    server, _ = toy
    resp = post(server, body)
    assert resp.status_code == 422, resp.text
    err = resp.json()
    assert err["field"] == field and field in err["error"]


def test_malformed_and_oversized_bodies(toy):
    server, _ = toy
    resp = httpx.post(
        server.url + "/v1/generate", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422 and resp.json()["error"]
    big = httpx.post(
        server.url + "/v1/generate", content=b"x" * 5000, headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 413 and "4096" in big.json()["error"]

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(10):
            yield b" " * 1000

    chunked = httpx.post(
        server.url + "/v1/generate", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    assert httpx.get(server.url + "/nope").json()["error"] == "Not Found"


def test_models_health_openapi(toy):
    server, pipe = toy
    info = httpx.get(server.url + "/v1/models").json()
    assert info["model"] == "serve-toy" and info["metrics"] == METRICS and info["fingerprint"] == "f" * 64
    assert (
        info["config"] == pipe.info["config"] and info["image_shape"] == [8, 8, 1] and info["options"] == []
    )
    assert info["batching"]["enabled"] is True and info["limits"]["max_n"] == 32
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"ready": True}
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/generate", "/v1/restore", "/v1/models", "/healthz"} <= set(schema["paths"])
    assert "class" in json.dumps(schema["components"]["schemas"]["GenerateRequest"])


def test_client(toy):
    server, pipe = toy
    with Client(server.url) as client:
        assert np.array_equal(client.generate(n=4, seed=9), pipe.generate(4, seed=9)[0])
        assert client.last_seed == 9
        assert (
            client.models()["metrics"] == METRICS and client.health() == {"status": "ok"} and client.ready()
        )
        with pytest.raises(ServiceError) as err:
            client.generate(n=1000)
        assert err.value.status == 422 and err.value.field == "n"


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_and_batches(toy):
    server, _ = toy
    before = httpx.get(server.url + "/metrics").text
    for seed in range(3):
        post(server, {"n": 2, "seed": seed, "format": "npy"})
    post(server, {"n": 0})
    resp = httpx.get(server.url + "/metrics")
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = resp.text
    ok = dict(route="/v1/generate", method="POST", status="200")
    bad = dict(route="/v1/generate", method="POST", status="422")
    assert (
        _metric(after, "genforge_requests_total", **ok) - _metric(before, "genforge_requests_total", **ok)
        == 3
    )
    assert (
        _metric(after, "genforge_requests_total", **bad) - _metric(before, "genforge_requests_total", **bad)
        == 1
    )
    assert (
        _metric(after, "genforge_images_total", task="generate")
        - _metric(before, "genforge_images_total", task="generate")
        == 6
    )
    assert (
        _metric(after, "genforge_batch_size_images_count")
        >= _metric(before, "genforge_batch_size_images_count") + 3
    )
    assert _metric(after, "genforge_request_duration_seconds_count", route="/v1/generate") >= 4
    assert "# TYPE genforge_request_duration_seconds histogram" in after
    assert 'genforge_batch_size_images_bucket{le="+Inf"}' in after


def test_api_key(tmp_path):
    with serving(make_run(tmp_path), api_key="s3cret") as server:
        url = server.url + "/v1/generate"
        body = {"n": 1, "seed": 0, "format": "npy"}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert "API key" in httpx.get(server.url + "/v1/models").json()["error"]
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(url, json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json"):
            assert httpx.get(server.url + open_path).status_code == 200, open_path
        with Client(server.url, api_key="s3cret") as client:
            assert client.generate(n=1, seed=0).shape == (1, 8, 8, 1)


def test_timeout_is_504_and_readyz(tmp_path):
    with serving(make_run(tmp_path, delay_ms=400), request_timeout_s=0.1) as server:
        resp = post(server, {"n": 1, "seed": 0})
        assert resp.status_code == 504 and "0.1 s" in resp.json()["error"]


def test_restore_multipart_json_npy(tmp_path):
    run = make_run(tmp_path, "serve-toy-restore")
    pipe = load_pipeline(run)
    rng = np.random.default_rng(0)
    corrupted = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    expected = to_uint8(pipe.model.restore(from_uint8(corrupted)))

    def png(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0]).save(buf, format="PNG")
        return buf.getvalue()

    with serving(run) as server:
        url = server.url + "/v1/restore"
        files = [("image", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(corrupted)]
        multi = httpx.post(url, files=files, params={"format": "npy"})
        assert multi.status_code == 200, multi.text
        assert np.array_equal(npy(multi), expected)
        body = {"images": [base64.b64encode(png(im)).decode() for im in corrupted], "format": "json"}
        out = httpx.post(url, json=body).json()
        restored = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in out["images"]])
        assert np.array_equal(restored, expected[..., 0])
        with Client(server.url) as client:
            assert np.array_equal(client.restore(corrupted), expected)
            assert client.models()["task"] == "restore"
        wrong = httpx.post(url, files=[("image", ("x.png", png(np.zeros((9, 8, 1), np.uint8)), "image/png"))])
        assert (
            wrong.status_code == 422 and wrong.json()["field"] == "image" and "8x8" in wrong.json()["error"]
        )
        junk = httpx.post(url, json={"images": ["%%%"]})
        assert junk.status_code == 422 and junk.json()["field"] == "images.0"
        assert httpx.post(url, content=b"hi", headers={"Content-Type": "text/plain"}).status_code == 415
        assert post(server, {"n": 1}).status_code == 409
        assert torch.equal(torch.tensor(pipe.model.forward_sizes), torch.tensor([3]))
