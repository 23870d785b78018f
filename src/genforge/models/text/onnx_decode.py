"""The gpt's KV-cache decode step in ONNX Runtime (`runtime: onnx`, models.text.pipeline).

At nanoGPT's CPU-recipe size (4 layers, 128 wide) a one-stream decode step is ~80 eager PyTorch
operations on (1, 128) activations, each mostly fixed overhead, plus reading the ~3 MB of fp32
weights. The step exported to ONNX (once per model and weights, in memory: no file) is ~90 ORT
nodes run by one session on one thread; on the 2-core Xeon it took 0.24 ms of CPU time against
torch's 0.38 ms (bench/text_decode_speed.py), about 0.1 ms of either being the weights' reads
(the same graph with every layer sharing one layer's weights ran in half the time).

* The cache stays the model's `KVCache` (torch tensors, which `prefill`, `copy` and the torch step
  keep using): each layer's keys and values go in as numpy views of its memory, and the step's
  new keys and values (all layers in one output each) are written into the ring by numpy. A step
  over the whole cache (every slot, in order: the pipeline's case) runs on an IOBinding made once
  per cache: inputs written in place, no per-step binding; one over some slots copies their rows.
* The new key joins the attention by a concatenation after the ring (W + 1 keys), the window by
  an additive mask (W + 1 columns, a row of a small table per position: ring entries before the
  position, all but the entry the new key replaces once the ring is full, the new key).
* RoPE: qkv * cos + (qkv with each head's halves swapped, a Gather) * signed sin, the rows of the
  model's own tables ([cos | sin] over the qkv columns, 1 | 0 on v's) fed per step; the attention
  scale is folded into the q columns of the qkv weight. Learned positions are one Gather.

Logits agree with the torch step's to float rounding (another operation order). `onnx-int8` runs
the same graph with its weight matrices in 8 bits (`quantize_int8`): its logits are the fp32 step's
up to the weights' rounding instead. A model in
another dtype than fp32 or not on the CPU, or a graph that does not export, stays on torch
(`text_decoder`, one warning).
"""

from __future__ import annotations

import io
import os
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genforge.core.errors import ConfigError
from genforge.models.text.gpt import small_ops

OPSET = 17  # LayerNormalization
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
# onnx-int8: the step's weight matrices in 8 bits (ORT's MatMulNBits, symmetric, one fp32 scale
# per block of 32 input rows; products in int8, accuracy level 4). At nanoGPT's CPU size the
# fp32 weights (3.1 MB) do not fit a core's 2 MB L2 and reading them is half the step; in 8 bits
# they do (bench/results/text.md: the one-slot step 1.8x faster, val loss +0.0005 nats/char)
INT8_BLOCK = 32
# under auto, a call decoding fewer tokens (streams x max_tokens) than this keeps torch unless the
# step is already exported for the model's weights: an export costs ~0.1-0.3 s, about what the
# ORT step saves over ~1,500 one-stream tokens at nanoGPT's CPU-recipe size
AUTO_MIN_TOKENS = 2048


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _StepGraph(nn.Module):
    """The exported graph: one token for each of B rows.

    inputs: ids (B,) int64; rope: rot (B, 6C) = per row [cos | signed sin] over the qkv columns,
    or learned: pos (B,) int64; bias (B, 1, 1, W + 1) 0 / -inf over [the ring's W entries, the
    new key]; k0, v0, k1, ... (B, H, W, D) the rows' cached keys and values per layer.
    outputs: logits (B, V); k_new, v_new (B, H, L, D) the new keys and values of the L layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        tr = model.transformer
        c, h, d = cfg.n_embd, cfg.n_head, model.head_dim
        self.n_head, self.head_dim, self.rope = h, d, cfg.positions == "rope"

        def const(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().float().clone()

        scale = torch.ones(3 * c)
        scale[:c] = d**-0.5  # the attention's scale, folded into the q columns
        # the half swap of each head's channels (rotate_half's roll), identity on v's columns
        local = torch.arange(3 * c) % d
        swap = torch.arange(3 * c) - local + (local + d // 2) % d
        swap[2 * c :] = torch.arange(2 * c, 3 * c)
        self.swap = swap
        self.wte = const(tr.wte.weight)
        self.wpe = None if self.rope else const(tr.pos.wpe.weight)
        self.layers = []
        for b in tr.h:
            w = b.attn.qkv.weight.detach().float().t() * scale  # (C, 3C)
            bias = None if b.attn.qkv.bias is None else const(b.attn.qkv.bias) * scale
            self.layers.append(
                (
                    (const(b.ln_1.weight), const(b.ln_1.bias)),
                    (w.contiguous(), bias),
                    (const(b.attn.proj.weight.t()), const(b.attn.proj.bias)),
                    (const(b.ln_2.weight), const(b.ln_2.bias)),
                    (const(b.fc.weight.t()), const(b.fc.bias)),
                    (const(b.proj.weight.t()), const(b.proj.bias)),
                )
            )
        self.eps = [(b.ln_1.eps, b.ln_2.eps) for b in tr.h]
        self.ln_f = (const(tr.ln_f.weight), const(tr.ln_f.bias), tr.ln_f.eps)
        head = tr.wte.weight if cfg.tie_weights else tr.lm_head.weight
        self.head = const(head.t())

    @staticmethod
    def _mm(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        w, b = wb
        return x @ w if b is None else x @ w + b

    def forward(self, ids: torch.Tensor, where: torch.Tensor, bias: torch.Tensor,
                *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        h, d = self.n_head, self.head_dim
        c = h * d
        x = F.embedding(ids, self.wte)
        if self.rope:
            cos, sin = where[:, : 3 * c], where[:, 3 * c :]
        else:
            x = x + F.embedding(where, self.wpe)
        keys_new, values_new = [], []
        for i, (ln_1, qkv_w, proj, ln_2, fc, fc_out) in enumerate(self.layers):
            eps_1, eps_2 = self.eps[i]
            qkv = self._mm(F.layer_norm(x, (c,), *ln_1, eps_1), qkv_w)
            if self.rope:  # q and k rotated: qkv * cos + (half-swapped qkv) * signed sin
                qkv = qkv * cos + qkv.index_select(1, self.swap) * sin
            q, k, v = qkv.reshape(-1, 3 * h, 1, d).split(h, 1)  # each (B, H, 1, D)
            keys = torch.cat((kv[2 * i], k), 2)  # (B, H, W + 1, D): the cache, then the new key
            values = torch.cat((kv[2 * i + 1], v), 2)
            att = torch.softmax(q @ keys.transpose(-1, -2) + bias, -1) @ values  # (B, H, 1, D)
            x = x + self._mm(att.reshape(-1, c), proj)
            x = x + self._mm(F.gelu(self._mm(F.layer_norm(x, (c,), *ln_2, eps_2), fc)), fc_out)
            keys_new.append(k)
            values_new.append(v)
        w, b, eps = self.ln_f
        # the new keys and values of all layers in one tensor each: (B, H, L, D)
        return F.layer_norm(x, (c,), w, b, eps) @ self.head, torch.cat(keys_new, 2), torch.cat(values_new, 2)


def export_step(model: nn.Module, batch: int | None = None) -> bytes:
    """The decode step of `model` (a gpt) as ONNX bytes: for `batch` rows, or any (None)."""
    cfg = model.config
    n_layer, h, w, d, c = cfg.n_layer, cfg.n_head, cfg.block_size, model.head_dim, cfg.n_embd
    rope = cfg.positions == "rope"
    graph = _StepGraph(model).eval()
    b = batch or 2  # an example batch
    where = torch.ones(b, 6 * c) if rope else torch.zeros(b, dtype=torch.long)
    kv = [torch.zeros(b, h, w, d) for _ in range(2 * n_layer)]
    example = (torch.zeros(b, dtype=torch.long), where, torch.zeros(b, 1, 1, w + 1), *kv)
    cache_names = [f"{kind}{i}" for i in range(n_layer) for kind in ("k", "v")]
    in_names = ["ids", "rot" if rope else "pos", "bias", *cache_names]
    out_names = ["logits", "k_new", "v_new"]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript-based exporter is deprecated (see deploy/export.py): still the one that
        # works with what genforge installs
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example,
            buf,
            dynamo=False,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes={name: {0: "batch"} for name in in_names + out_names} if batch is None else None,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return buf.getvalue()


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """The step with its constant weight matrices in 8 bits (ONNX Runtime's MatMulNBits through
    its own quantizer, onnxruntime.quantization.matmul_nbits_quantizer)."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load_from_string(onnx_bytes)
    # the exporter writes the weights as Constant nodes; the quantizer takes initializers
    nodes = []
    for node in model.graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and node.attribute[0].name == "value" else None
        if value is not None and len(value.dims) == 2 and value.data_type == onnx.TensorProto.FLOAT:
            value.name = node.output[0]
            model.graph.initializer.append(value)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        q = MatMulNBitsQuantizer(model, bits=8, block_size=INT8_BLOCK, is_symmetric=True, accuracy_level=4)
        q.process()
    finally:
        quant_logger.setLevel(level)
    return q.model.model.SerializeToString()


def _session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # one thread, as the torch step (models.text.gpt.small_ops): a team only adds synchronisation
    # at these sizes, and waits for a descheduled member on a busy machine
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def weights_version(model: nn.Module) -> tuple:
    """Changes when a parameter is replaced or modified in place (load_state_dict, an optimiser
    step): an exported step holds a copy of the weights."""
    try:
        return tuple((p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:  # inference tensors keep no version counter (and cannot change outside it)
        return tuple(p.data_ptr() for p in model.parameters())


class OnnxDecoder:
    """A gpt whose `decode(cache, slots, ids)` runs in ONNX Runtime (`model.decode`'s contract,
    the same `KVCache`); `new_cache` and `prefill` are the model's. Thread-safe across caches: the
    buffers of a cache are its own (one decode loop owns a cache, as with the torch step)."""

    def __init__(self, model: nn.Module, onnx_bytes: bytes | None = None, int8: bool = False):
        self.model = model
        self.version = weights_version(model)
        self.int8 = int8
        step = onnx_bytes if onnx_bytes is not None else export_step(model)
        self.session = _session(quantize_int8(step) if int8 else step)
        cfg = model.config
        self.config = cfg
        self.window, self.n_layer, self.rope = cfg.block_size, cfg.n_layer, cfg.positions == "rope"
        w = self.window
        # the additive mask over [ring entries 0..W-1, the new key] of a query at position p: row
        # p < W attends entries 0..p-1, row W + r (p >= W, r = p % W) all but entry r (position
        # p - W, out of the window: the new key replaces it); the new key always
        j = np.arange(w + 1)[None, :]
        p = np.arange(w)[:, None]
        valid = np.concatenate(((j < p) | (j == w), (j != p) | (j == w)))
        self._bias = np.ascontiguousarray(np.where(valid, 0.0, -np.inf).astype(np.float32)[:, None, None, :])
        self._rot = np.zeros((0, 6 * cfg.n_embd), np.float32)
        self._names = [f"{kind}{i}" for i in range(cfg.n_layer) for kind in ("k", "v")]
        self._caches: weakref.WeakKeyDictionary[Any, _CacheBuffers] = weakref.WeakKeyDictionary()

    @classmethod
    def create(cls, model: nn.Module, int8: bool = False) -> OnnxDecoder | None:
        """The decoder (its weights in 8 bits with `int8`), or None (with a warning) when the step
        cannot run in ORT."""
        w = model.transformer.wte.weight
        if w.device.type != "cpu" or w.dtype != torch.float32:
            warnings.warn(f"gpt decode: the ONNX Runtime step runs fp32 CPU models, this one is {w.dtype} on "
                          f"{w.device}; decoding with torch", RuntimeWarning, stacklevel=3)  # fmt: skip
            return None
        try:
            return cls(model, int8=int8)
        except Exception as exc:  # export or session errors: the torch step still works
            warnings.warn(f"gpt decode: ONNX Runtime step unavailable ({type(exc).__name__}: {exc}); "
                          "decoding with torch", RuntimeWarning, stacklevel=3)  # fmt: skip
            return None

    # the rest of the slot-model protocol (deploy.scheduler.SlotModel): the model's
    def new_cache(self, slots: int, dtype: torch.dtype | None = None) -> Any:
        return self.model.new_cache(slots, dtype)

    def prefill(self, cache: Any, slot: int, ids: torch.Tensor | list[int]) -> torch.Tensor:
        return self.model.prefill(cache, slot, ids)

    def decode(self, cache: Any, slots: Sequence[int] | torch.Tensor, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """`model.decode` with ONNX Runtime's step: logits (S, vocab). Learned positions past the
        context take the model's recompute path (torch), as `model.decode` does."""
        model = self.model
        slot_list, id_list, lengths = model.begin_decode(cache, slots, ids)
        if self.rope or max(lengths) < self.window:
            out = self.step(cache, slot_list, id_list, lengths)  # numpy and ORT only: no torch ops
        else:
            with torch.inference_mode(), small_ops():
                out = model._decode(cache, slot_list, id_list, lengths, self.step)
        for s in slot_list:
            cache.lengths[s] += 1
        return out

    def step(self, cache: Any, slots: list[int], ids: list[int], lengths: list[int]) -> torch.Tensor:
        """One token per slot through the cache (`GPT._decode_cached`'s contract): logits (S, V)."""
        if cache.k.dtype != torch.float32:
            return self.model._decode_cached(cache, slots, ids, lengths)
        w = self.window
        buffers = self._caches.get(cache)
        if buffers is None:
            buffers = self._caches[cache] = _CacheBuffers(self, cache)
        n = len(slots)
        if n == 1:
            p = lengths[0]
            ring: Any = p % w
            bias_row: Any = p if p < w else w + ring
        else:
            pos = np.asarray(lengths, dtype=np.int64)
            ring = pos % w
            bias_row = np.where(pos < w, pos, w + ring)
        where = self._rot_rows(lengths) if self.rope else np.asarray(lengths, dtype=np.int64)
        first = slots[0]
        if n == 1 or slots == list(range(first, first + n)):  # a run of slots: its bound buffers
            bound = buffers.run(self, first, n)
            bound.ids[:] = ids
            bound.where[:] = where
            bound.bias[:] = self._bias[bias_row]
            self.session.run_with_iobinding(bound.io)
            logits, k_new, v_new = bound.logits.copy(), bound.k_new, bound.v_new
        else:  # scattered slots: their rows of the cache, copied
            rows = np.asarray(slots, dtype=np.int64)
            feeds = {"ids": np.asarray(ids, dtype=np.int64), "rot" if self.rope else "pos": where,
                     "bias": self._bias[bias_row]}  # fmt: skip
            for name, view in zip(self._names, buffers.views, strict=True):
                feeds[name] = view[rows]
            logits, k_new, v_new = self.session.run(None, feeds)
        cache_k, cache_v = buffers.k, buffers.v  # (L, N, H, W, D)
        if n == 1:  # (H, L, D) into the slot's ring position of every layer
            cache_k[:, slots[0], :, ring] = k_new[0].transpose(1, 0, 2)
            cache_v[:, slots[0], :, ring] = v_new[0].transpose(1, 0, 2)
        else:  # (S, L, H, D) into each slot's ring position
            index = np.asarray(slots, dtype=np.int64)
            cache_k[:, index, :, ring] = k_new.transpose(0, 2, 1, 3)
            cache_v[:, index, :, ring] = v_new.transpose(0, 2, 1, 3)
        return torch.from_numpy(logits)

    def _rot_rows(self, positions: list[int]) -> np.ndarray:
        """[cos | signed sin] rows (len, 6C) of `positions` over the qkv columns (v: 1 | 0): the
        model's own RoPE tables, so both steps rotate by the same numbers."""
        longest = max(positions) + 1
        if len(self._rot) < longest:
            size = max(longest, 2 * len(self._rot), 1024)
            cos, _, signed = self.model.transformer.pos._tables(size, torch.device("cpu"))
            cos, signed = cos[:size].numpy(), signed[:size].numpy()
            h = self.config.n_head
            qk_cos, qk_sin = np.tile(cos, (1, 2 * h)), np.tile(signed, (1, 2 * h))
            ones = np.ones((size, qk_cos.shape[1] // 2), np.float32)
            self._rot = np.ascontiguousarray(np.concatenate((qk_cos, ones, qk_sin, 0 * ones), 1), np.float32)
        return self._rot[positions[0]] if len(positions) == 1 else self._rot[positions]


class _CacheBuffers:
    """A cache's numpy views (shared memory) and, per run of consecutive slots a step decodes
    (the whole cache in the pipeline, any one slot in the service), an IOBinding of the run's
    views and of reusable input and output buffers: a step writes its few inputs in place and
    runs, no per-step binding or copy."""

    MAX_RUNS = 256  # bindings kept per cache (a few per slot at most in practice)

    def __init__(self, decoder: OnnxDecoder, cache: Any):
        self.k, self.v = cache.k.numpy(), cache.v.numpy()  # (L, N, H, W, D)
        self.views = [t[i] for i in range(decoder.n_layer) for t in (self.k, self.v)]  # (N, H, W, D) each
        self.runs: dict[tuple[int, int], _Run] = {}

    def run(self, decoder: OnnxDecoder, first: int, n: int) -> _Run:
        bound = self.runs.get((first, n))
        if bound is None:
            if len(self.runs) >= self.MAX_RUNS:
                self.runs.clear()
            bound = self.runs[first, n] = _Run(decoder, [v[first : first + n] for v in self.views])
        return bound


class _Run:
    """An IOBinding of the cache views of `n` consecutive slots and of the step's other buffers."""

    def __init__(self, decoder: OnnxDecoder, views: list[np.ndarray]):
        cfg = decoder.config
        n, h, _, d = views[0].shape
        self.views = views  # the bound memory stays referenced
        self.ids = np.zeros(n, np.int64)
        self.where = np.zeros((n, 6 * cfg.n_embd), np.float32) if decoder.rope else np.zeros(n, np.int64)
        self.bias = np.zeros((n, *decoder._bias.shape[1:]), np.float32)
        self.logits = np.zeros((n, cfg.vocab_size), np.float32)
        self.k_new = np.zeros((n, h, cfg.n_layer, d), np.float32)
        self.v_new = np.zeros_like(self.k_new)
        self.io = decoder.session.io_binding()
        inputs = {"ids": self.ids, "rot" if decoder.rope else "pos": self.where, "bias": self.bias,
                  **dict(zip(decoder._names, views, strict=True))}  # fmt: skip
        for name, array in inputs.items():
            self.io.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        for name, array in (("logits", self.logits), ("k_new", self.k_new), ("v_new", self.v_new)):
            self.io.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


class ThroughModel:
    """An `OnnxDecoder` whose steps go through `model.decode(cache, slots, ids, step)`: the model's
    decode stays the one entry point of every step (what wraps or instruments it, as the
    service's tests do, still sees them), for ~25 us more per step than `OnnxDecoder.decode`."""

    def __init__(self, decoder: OnnxDecoder):
        self.decoder, self.model = decoder, decoder.model

    def new_cache(self, slots: int, dtype: torch.dtype | None = None) -> Any:
        return self.model.new_cache(slots, dtype)

    def prefill(self, cache: Any, slot: int, ids: torch.Tensor | list[int]) -> torch.Tensor:
        return self.model.prefill(cache, slot, ids)

    def decode(self, cache: Any, slots: Sequence[int] | torch.Tensor, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return self.model.decode(cache, slots, ids, self.decoder.step)


# per model: runtime -> its decoder, or the weights' version an export failed for
_DECODERS: weakref.WeakKeyDictionary[nn.Module, dict[str, OnnxDecoder | tuple]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def default_runtime() -> str:
    """The decode runtime when none is given: $GENFORGE_TEXT_RUNTIME, else auto."""
    return os.environ.get("GENFORGE_TEXT_RUNTIME", "auto") or "auto"


def text_decoder(model: nn.Module, runtime: str = "auto", tokens: int | None = None) -> Any:
    """What decodes `model`'s tokens under `runtime`: the model itself (torch) or an
    `OnnxDecoder` of it (new_cache / prefill / decode, the model's contract).

    auto: ONNX Runtime for a gpt in fp32 on the CPU when onnxruntime imports and the step
    exports, else torch; onnx: ONNX Runtime, falling back to torch with a warning; onnx-int8:
    the same with the step's weight matrices in 8 bits (`quantize_int8`: faster where fp32
    weights outgrow the core's cache, logits no longer equal to fp32's up to rounding). The export
    (~0.1-0.3 s, in memory) happens on first use and is kept per model until its weights change;
    a failed one is not retried for the same weights (one warning). `tokens`: how many a caller
    will decode at most; under auto, fewer than AUTO_MIN_TOKENS do not pay for a new export (the
    step saves ~0.1-0.4 ms per decode step), so samples drawn while training, whose weights
    change between calls, stay on torch."""
    check_runtime(runtime)
    if runtime == "torch" or not hasattr(model, "begin_decode"):
        return model
    w = model.transformer.wte.weight
    if runtime == "auto" and (w.device.type != "cpu" or w.dtype != torch.float32 or not onnxruntime_available()):
        return model
    if not onnxruntime_available():
        warnings.warn(f"runtime {runtime}: onnxruntime does not import; decoding with torch", RuntimeWarning,
                      stacklevel=2)
        return model
    version = weights_version(model)
    kind = "onnx" if runtime == "auto" else runtime
    with _LOCK:
        known = _DECODERS.setdefault(model, {}).get(kind)
        if isinstance(known, OnnxDecoder) and known.version == version:
            return known
        if isinstance(known, tuple) and known == version:  # failed for these weights: torch, no new warning
            return model
        if runtime == "auto" and tokens is not None and tokens < AUTO_MIN_TOKENS:
            return model
        decoder = OnnxDecoder.create(model, int8=kind == "onnx-int8")
        _DECODERS[model][kind] = decoder if decoder is not None else version
    return decoder if decoder is not None else model
