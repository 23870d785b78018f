"""Micro-batching: the batcher on its own, then 64 concurrent clients on a real server, each
answer checked against the model run alone on that request's seed (toy model and real dcgan)."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from genforge.deploy.batching import BatcherClosed, BatcherOverloaded, MicroBatcher
from genforge.models.pipeline import load_pipeline, save_model
from genforge.models.registry import MODELS
from test_serve_models import make_run, serving


class Recorder:
    """run_batch that records its batches; blocks on `gate` so tests can pile up work first."""

    def __init__(self):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, jobs):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(jobs))
        return [("done", job) for job in jobs]


def blocked(recorder: Recorder, batcher: MicroBatcher) -> None:
    """Occupy the worker with one job until `recorder.gate` is set."""
    recorder.gate.clear()
    batcher.submit(("block", 1))
    assert recorder.entered.wait(5)


def size_of(job) -> int:
    return job[1]


def test_queued_jobs_merge_up_to_max_batch():
    rec = Recorder()
    b = MicroBatcher(rec, size=size_of, max_batch=8, max_wait_s=0.0)
    b.start()
    blocked(rec, b)
    futures = [b.submit((i, 3)) for i in range(6)]  # 18 images, at most 8 per pass -> 2 per batch
    rec.gate.set()
    assert [f.result(5) for f in futures] == [("done", (i, 3)) for i in range(6)]
    assert b.close(5)
    merged = rec.batches[1:]
    assert [len(batch) for batch in merged] == [2, 2, 2]
    assert all(sum(size_of(j) for j in batch) <= 8 for batch in merged)


def test_keys_never_mix_and_order_is_kept():
    rec = Recorder()
    b = MicroBatcher(rec, key=lambda job: job[0] if isinstance(job[0], str) else job[0] % 2, max_wait_s=0.0)
    b.start()
    blocked(rec, b)
    futures = [b.submit((i, 1)) for i in range(10)]
    rec.gate.set()
    for f in futures:
        f.result(5)
    b.close(5)
    groups = [[j[0] for j in batch] for batch in rec.batches[1:]]
    assert groups == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_max_requests_one_disables_merging():
    rec = Recorder()
    b = MicroBatcher(rec, max_requests=1, max_wait_s=0.05)
    b.start()
    blocked(rec, b)
    futures = [b.submit((i, 1)) for i in range(5)]
    rec.gate.set()
    for f in futures:
        f.result(5)
    b.close(5)
    assert [len(batch) for batch in rec.batches] == [1] * 6


def test_idle_model_runs_a_lone_job_at_once():
    rec = Recorder()
    b = MicroBatcher(rec, max_wait_s=5.0)  # a waiting batcher would hold the job for 5 s
    b.start()
    t0 = time.perf_counter()
    assert b.submit((0, 1)).result(5) == ("done", (0, 1))
    assert time.perf_counter() - t0 < 1.0
    b.close(5)
    assert [[j[0] for j in batch] for batch in rec.batches] == [[0]]


def test_under_load_a_batch_waits_for_company():
    """Only after a merged pass that left work queued does the next batch wait (here until full)."""
    batches, entered, permits = [], threading.Semaphore(0), threading.Semaphore(0)

    def step(jobs):  # each pass announces itself, then waits for a permit
        batches.append([j[0] for j in jobs])
        entered.release()
        assert permits.acquire(timeout=10)
        return jobs

    b = MicroBatcher(step, max_batch=2, max_wait_s=5.0)
    b.start()
    futures = [b.submit((0, 1))]
    assert entered.acquire(timeout=5)  # [0] runs alone: the model was idle
    futures += [b.submit((1, 1)), b.submit((2, 1))]
    permits.release()
    assert entered.acquire(timeout=5)  # [1, 2] merged; 3 arrives during that pass
    futures.append(b.submit((3, 1)))
    permits.release()
    time.sleep(0.2)  # the batch holding 3 is waiting for company, not running
    assert batches == [[0], [1, 2]]
    futures.append(b.submit((4, 1)))
    assert entered.acquire(timeout=5)
    permits.release()
    assert [f.result(5) for f in futures] == [(i, 1) for i in range(5)]
    b.close(5)
    assert batches == [[0], [1, 2], [3, 4]]


def test_async_futures_get_results_and_errors():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_wait_s=0.0)
        b.start()
        blocked(rec, b)
        futures = [b.submit_async((i, 1)) for i in range(5)]
        rec.gate.set()
        results = await asyncio.gather(*futures)
        b.close(5)

        failing = MicroBatcher(lambda jobs: 1 / 0, max_wait_s=0.0)
        failing.start()
        with pytest.raises(ZeroDivisionError):
            await failing.submit_async("x")
        failing.close(5)
        return results, rec.batches

    results, batches = asyncio.run(main())
    assert results == [("done", (i, 1)) for i in range(5)]
    assert [[j[0] for j in batch] for batch in batches[1:]] == [[0, 1, 2, 3, 4]]


def test_errors_reach_every_caller_and_cancelled_jobs_are_skipped():
    seen = []

    def failing(jobs):
        seen.extend(jobs)
        if any(j == "boom" for j in jobs):
            raise RuntimeError("model failed")
        return jobs

    gate = threading.Event()
    b = MicroBatcher(lambda jobs: (gate.wait(5), failing(jobs))[1], max_wait_s=0.0)
    b.start()
    b.submit("first")
    time.sleep(0.05)
    cancelled = b.submit("cancelled")
    assert cancelled.cancel()
    doomed = [b.submit("boom"), b.submit("ok")]
    gate.set()
    for f in doomed:
        with pytest.raises(RuntimeError, match="model failed"):
            f.result(5)
    b.close(5)
    assert "cancelled" not in seen


def test_close_drains_the_queue_then_refuses():
    rec = Recorder()
    b = MicroBatcher(rec, max_requests=1)
    b.start()
    blocked(rec, b)
    futures = [b.submit((i, 1)) for i in range(5)]
    closer = threading.Thread(target=b.close, args=(10,))
    closer.start()
    time.sleep(0.05)
    with pytest.raises(BatcherClosed):
        b.submit((99, 1))
    rec.gate.set()
    closer.join(10)
    assert [f.result(0) for f in futures] == [("done", (i, 1)) for i in range(5)]


def test_overload_is_refused():
    rec = Recorder()
    b = MicroBatcher(rec, size=size_of, max_pending=4)
    b.start()
    blocked(rec, b)
    b.submit((0, 3))
    with pytest.raises(BatcherOverloaded):
        b.submit((1, 2))
    b.submit((2, 1))
    rec.gate.set()
    b.close(5)


# real servers ------------------------------------------------------------------------------------


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.post("/v1/generate", json=b) for b in bodies))


def run_clients(server, pipe, bodies):
    """Fire all bodies at once; every answer must be 200 and equal the model run alone."""
    responses = asyncio.run(_concurrent(server.url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    for body, resp in zip(bodies, responses, strict=True):
        got = np.load(io.BytesIO(resp.content), allow_pickle=False)
        expected, _ = pipe.generate(body["n"], seed=body["seed"], class_label=body.get("class"))
        assert np.array_equal(got, expected), body


BODIES = [{"n": 1 + i % 3, "seed": 1000 + i, "format": "npy"} for i in range(64)]


def test_64_clients_merge_and_each_gets_its_own_seed(tmp_path):
    run = make_run(tmp_path, delay_ms=20)
    with serving(run, max_batch=64, max_wait_ms=10) as server:
        model = server.app.state.genforge.engine.model
        model.forward_sizes.clear()
        run_clients(server, load_pipeline(run), BODIES)
        sizes = model.forward_sizes
        assert sum(sizes) == sum(b["n"] for b in BODIES)
        assert max(sizes) > 8 and len(sizes) < 32, sizes  # merged, not one pass per request
        assert max(sizes) <= 64


@pytest.mark.parametrize(("name", "overrides"), [("serve-toy", {"batching": False}), ("serve-toy-plain", {})])
def test_unmerged_paths_stay_correct(tmp_path, name, overrides):
    run = make_run(tmp_path, name)
    with serving(run, **overrides) as server:
        model = server.app.state.genforge.engine.model
        model.forward_sizes.clear()
        bodies = BODIES[:16]
        run_clients(server, load_pipeline(run), bodies)
        assert sorted(model.forward_sizes) == sorted(b["n"] for b in bodies)
        assert server.app.state.genforge.model_info()["batching"]["enabled"] is False


def _dcgan_run(path, name: str, num_classes: int = 0):
    pytest.importorskip("genforge.models.gan")
    cls = MODELS.get(name)
    cfg = cls.default_config(16, 3, num_classes, g_widths=[32, 16, 8], d_widths=[8, 16], latent_dim=16)
    model = cls(cfg)
    with torch.no_grad():  # untrained but not degenerate batch-norm statistics
        for m in model.generator.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.2, 0.2)
    save_model(model, name, path, {"dataset": {"fingerprint": "0" * 64}, "step": 0})
    return path


@pytest.mark.parametrize(("name", "classes"), [("dcgan", 0), ("cgan", 3)])
def test_dcgan_batched_serving_equals_pipeline(tmp_path, name, classes):
    run = _dcgan_run(tmp_path, name, classes)
    with serving(run, max_batch=64, max_wait_ms=20) as server:
        assert server.app.state.genforge.engine.mergeable
        bodies = [{"n": 1 + i % 2, "seed": i, "format": "npy"} for i in range(24)]
        if classes:
            bodies = [{**b, "class": i % classes} for i, b in enumerate(bodies)]
        run_clients(server, load_pipeline(run), bodies)
        batches = server.app.state.genforge.metrics.batch_requests
        assert batches.count() < 25  # warm-up + fewer passes than requests


def test_npy_bytes_equal_np_save_and_threads_leave_a_core():
    from genforge.deploy.service import encode_npy, torch_threads

    arrays = [np.zeros((1, 32, 32, 3), np.uint8), np.arange(48, dtype=np.uint8).reshape(2, 2, 4, 3)[:, ::-1]]
    for arr in arrays:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        assert encode_npy(arr) == buf.getvalue()
    cores = len(os.sched_getaffinity(0))
    assert torch_threads(3, 8) == 3  # configured wins
    assert torch_threads(0, 64) == max(1, cores - 1)
    assert torch_threads(0, 1) == 1
