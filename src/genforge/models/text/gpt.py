"""`gpt`: a decoder-only transformer trained by next-token prediction (self-supervised).

Pre-norm blocks (causal self-attention through `F.scaled_dot_product_attention`, then a 4x GELU
MLP), rotary (RoPE) or learned positions, the output projection tied to the token embedding,
nanoGPT's initialisation and optimiser layout (AdamW, weight decay on matrices only, warmup +
cosine decay, gradient clipping). The loss is the mean negative log-likelihood in nats per token,
computed in fp32 whatever precision the trainer's autocast runs the matmuls in.

Context: the model attends to at most `block_size` positions. With RoPE a query sees the last
`block_size` keys (a sliding window), so sequences may run past `block_size` and a key cached
with its absolute rotation stays valid: attention depends on relative offsets only. Learned
positions have no embedding past `block_size - 1`; there a sequence that outgrows the context
is recomputed over its last `block_size` tokens, as nanoGPT's sampler does.

Inference with a KV cache: `new_cache(slots)`, `prefill(cache, slot, ids)` (a prompt into a
free slot), `decode(cache, slots, ids)` (one token for each of S slots of different lengths in
ONE batched forward: what continuous batching calls every decode step), `cache.release(slot)`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.core.registry import Registry
from genforge.models.base import Batch, GenerativeModel, LRSchedule, ModelOutput, OptimizerSpec, Phase
from genforge.models.registry import MODELS

# attend(layer_index, q, k, v) -> (B, H, T, D): how a block's attention reads keys and values
# (plain causal for training; writing into and reading from a KV cache for inference)
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class GPTConfig:
    """Defaults: the char-level Shakespeare recipe (with batch 12), tuned on 2 CPU cores against
    nanoGPT's CPU recipe at equal wall time (bench/text_vs_nanogpt.py): nanoGPT's sizes with
    RoPE instead of learned positions (-0.04 nats/char at equal tokens) and 3x its lr (-0.04)."""

    vocab_size: int = 256  # fixed by the dataset's tokenizer
    num_classes: int = 0  # text models are unconditional: must be 0
    block_size: int = 64  # context length in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in the linear layers and LayerNorms
    positions: Literal["rope", "learned"] = "rope"
    rope_base: float = 10000.0
    tie_weights: bool = True  # output projection = token embedding (transposed)
    # optimisation: AdamW with decay on matrices only, warmup then cosine decay over the budget
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    lr_decay: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 = off

    def __post_init__(self) -> None:
        if self.num_classes != 0:
            raise ConfigError(
                f"model.num_classes: gpt is an unconditional text model, expected 0, got {self.num_classes}"
            )
        checks = {
            "vocab_size": self.vocab_size >= 1,
            "block_size": self.block_size >= 1,
            "n_layer": self.n_layer >= 1,
            "n_head": self.n_head >= 1,
            "n_embd": self.n_embd >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"model.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd: {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.positions == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(
                f"model.n_embd: RoPE rotates pairs of channels, so the head size n_embd / n_head must be "
                f"even, got {self.n_embd // self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        if self.grad_clip < 0 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("model: grad_clip >= 0, warmup_steps >= 0 and min_lr_ratio in [0, 1] expected")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """`F.scaled_dot_product_attention` in fp32 on CPU even under bf16 autocast: there its bf16
    flash kernel ran forward + backward of a (32, 4, 64, 32) causal attention in 36 ms against
    5.8 ms in fp32 (torch 2.13, Xeon with AMX); the matmuls around it keep bf16's speed."""
    if q.device.type == "cpu" and q.dtype != torch.float32:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread. A decode step is ~100 operations on (S, n_embd)
    activations whose cost is fixed overhead; an OpenMP team only adds synchronisation, and waits
    for a descheduled member when another process holds a core: sampling 300 tokens of one stream
    ran at 862 tokens/s on one thread against 70 on two with the second core busy (16 streams
    4,490 against 4,217; nanoGPT's shakespeare_char size 129 against 103)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- positions ---------------------------------------------------------------------------------


class RotaryPositions(nn.Module):
    """RoPE (Su et al. 2021, GPT-NeoX's half-split layout): queries and keys are rotated by their
    absolute position, so their dot product depends on the offset only."""

    sliding_window = True  # any length: attention sees the last block_size positions

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.head_dim, self.base = cfg.n_embd // cfg.n_head, cfg.rope_base
        # cos and sin per position, (N, D) fp32, grown on demand: a lookup per forward instead of
        # recomputing them (a plain attribute, not a buffer: not state, never saved or averaged)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x

    def cos_sin(self, positions: torch.Tensor, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (*positions.shape, D) of `positions`, all below `longest`."""
        table = self._table
        if table is None or len(table[0]) < longest or table[0].device != positions.device:
            size = max(longest, 2 * len(table[0]) if table is not None else 1024)
            half = self.head_dim // 2
            inv_freq = self.base ** (-torch.arange(half, device=positions.device, dtype=torch.float64) / half)
            angles = torch.arange(size, device=positions.device, dtype=torch.float64)[:, None] * inv_freq
            angles = torch.cat((angles, angles), -1)  # fp64: exact angles for positions in the millions
            table = self._table = (angles.cos().float(), angles.sin().float())
        return table[0][positions], table[1][positions]

    def rotation(self, positions: torch.Tensor, longest: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """positions (B|1, T), all below `longest` -> a function rotating (B, T, heads, D) queries
        and keys (all heads of both at once: one set of operations per layer)."""
        cos, sin = self.cos_sin(positions, longest)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B|1, T, 1, D)
        return lambda x: rotate_half(x, cos, sin)


def rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the last dimension of `x`: x * cos + (-x2, x1) * sin, in x's dtype (autocast's)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class LearnedPositions(nn.Module):
    """GPT-2's learned absolute position embedding (positions 0 .. block_size - 1 only)."""

    sliding_window = False

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x + self.wpe(positions)

    def rotation(self, positions: torch.Tensor, longest: int) -> None:
        return None

    def cos_sin(self, positions: torch.Tensor, longest: int) -> None:
        return None


POSITIONS: Registry[type[nn.Module]] = Registry("position encoding")
POSITIONS.register("rope", RotaryPositions)
POSITIONS.register("learned", LearnedPositions)


# --- blocks ------------------------------------------------------------------------------------


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, index: int):
        super().__init__()
        self.index, self.n_head = index, cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # one matmul for q, k and v
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rotate: Callable | None, attend: Attend) -> torch.Tensor:
        b, t, c = x.shape
        h = self.n_head
        qkv = _linear(x, self.qkv).view(b, t, 3 * h, c // h)
        qk = qkv[:, :, : 2 * h]  # queries and keys: rotated together
        if rotate is not None:
            qk = rotate(qk)
        q, k, v = qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2), qkv[:, :, 2 * h :].transpose(1, 2)
        y = attend(self.index, q, k, v)
        return self.drop(_linear(y.transpose(1, 2).reshape(b, t, c), self.proj))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, index: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg, index)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rotate: Callable | None, attend: Attend) -> torch.Tensor:
        x = x + self.attn(_norm(x, self.ln_1), rotate, attend)
        return x + self.drop(self.mlp(x))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(F.gelu(_linear(_norm(x, self.ln_2), self.fc)), self.proj)


# --- the KV cache ------------------------------------------------------------------------------


class KVCache:
    """Keys and values of `slots` sequences, per layer a ring buffer of `window` positions.

    Position p of a slot lives at ring index p % window, its key already rotated by p (RoPE), so
    the ring always holds the last `window` positions, which is all a query may attend to.
    `lengths[s]` counts the positions slot s has consumed; `tokens[s]` its token ids (the
    learned-position recompute path reads the last `window` of them)."""

    def __init__(self, n_layer: int, slots: int, n_head: int, window: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):  # fmt: skip
        shape = (n_layer, slots, n_head, window, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.window = window
        self.lengths = [0] * slots
        self.tokens: list[list[int]] = [[] for _ in range(slots)]

    @property
    def slots(self) -> int:
        return len(self.lengths)

    def release(self, slot: int) -> None:
        """Free `slot` for another sequence (its stale keys are masked by the length)."""
        self.lengths[slot] = 0
        self.tokens[slot] = []

    def copy(self, src: int, dst: int) -> None:
        """Make `dst` continue from `src`'s state (n completions of one prompt share its prefill)."""
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]
        self.lengths[dst] = self.lengths[src]
        self.tokens[dst] = list(self.tokens[src])


# --- the model ---------------------------------------------------------------------------------


class GPT(GenerativeModel):
    family = "transformer"
    modality = "text"
    config_class = GPTConfig
    ema_modules = ("transformer",)

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        cfg = config
        layers: dict[str, nn.Module] = {
            "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
            "pos": POSITIONS.get(cfg.positions)(cfg),
            "drop": nn.Dropout(cfg.dropout),
            "h": nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer)),
            "ln_f": nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        }
        if not cfg.tie_weights:
            layers["lm_head"] = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # one submodule holds everything, so one phase trains it and one EMA averages it; a tied
        # output layer is the embedding matrix itself (no second name for one tensor, which
        # safetensors would refuse to save)
        self.transformer = nn.ModuleDict(layers)
        self.head_dim = cfg.n_embd // cfg.n_head
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith(".proj.weight"):  # attention's and the MLP's output projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @classmethod
    def default_config(cls, vocab_size: int, num_classes: int = 0, **overrides: Any) -> GPTConfig:
        data = {"vocab_size": vocab_size, "num_classes": num_classes}
        return from_dict(GPTConfig, {**data, **overrides}, where=f"{cls.__name__} config")

    def phases(self) -> list[Phase]:
        cfg = self.config
        spec = OptimizerSpec("adamw", cfg.lr, tuple(cfg.betas), cfg.weight_decay, decay_matrices_only=True)
        schedule = LRSchedule(cfg.lr_decay, cfg.warmup_steps, cfg.min_lr_ratio)
        return [Phase("main", ["transformer"], spec, schedule=schedule, clip_grad_norm=cfg.grad_clip)]

    # --- forward -----------------------------------------------------------------------------

    def _hidden(self, idx: torch.Tensor, attend: Attend) -> torch.Tensor:
        """Final hidden states (B, T, C) of sequences `idx` (B, T) at positions 0..T-1."""
        tr = self.transformer
        positions = torch.arange(idx.shape[1], device=idx.device)[None]
        x = tr.drop(tr.pos.embed(tr.wte(idx), positions))
        rotate = tr.pos.rotation(positions, idx.shape[1])
        for block in tr.h:
            x = block(x, rotate, attend)
        return _norm(x, tr.ln_f)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.transformer.wte if self.config.tie_weights else self.transformer.lm_head
        return F.linear(hidden, head.weight)

    def _causal(self, t: int) -> Attend:
        """Attention over the sequence itself: causal, and for t > block_size (RoPE) banded to
        the last block_size positions, the same window the KV cache keeps."""
        dropout = self.config.dropout if self.training else 0.0
        window = self.config.block_size
        if t <= window:
            return lambda _i, q, k, v: attention(q, k, v, is_causal=True, dropout_p=dropout)
        if not self.transformer.pos.sliding_window:
            raise GenforgeError(
                f"gpt with learned positions reads at most block_size={window} tokens at once, got {t}"
            )
        i = torch.arange(t, device=self.transformer.wte.weight.device)
        band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
        return lambda _i, q, k, v: attention(q, k, v, attn_mask=band, dropout_p=dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab)."""
        return self._logits(self._hidden(idx, self._causal(idx.shape[1])))

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        tokens = batch.data
        logits = self(tokens[:, :-1])
        # the softmax in fp32: bf16 logits would round the loss and its gradient
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].reshape(-1))
        return ModelOutput(loss)

    @torch.no_grad()
    def nll(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood in nats, (B, T+1) ids -> (B, T): token t+1 given
        tokens 0..t (evaluation; call in eval mode)."""
        logits = self(tokens[:, :-1]).float()
        nll = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].reshape(-1), reduction="none")
        return nll.view(tokens.shape[0], -1)

    def sample(self, n: int, **options: Any) -> torch.Tensor:
        raise GenforgeError("gpt generates text: use models.text.pipeline.TextPipeline.complete")

    # --- inference with a KV cache -------------------------------------------------------------

    def new_cache(self, slots: int, dtype: torch.dtype | None = None) -> KVCache:
        w = self.transformer.wte.weight
        cfg = self.config
        return KVCache(cfg.n_layer, slots, cfg.n_head, cfg.block_size, self.head_dim, dtype or w.dtype, w.device)

    @torch.inference_mode()
    def prefill(self, cache: KVCache, slot: int, ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Run prompt `ids` (T,) into free `slot`; the logits (vocab,) for the next token."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=cache.k.device).view(-1)
        if len(ids) == 0:
            raise GenforgeError("prefill needs at least one token")
        window = cache.window
        if not self.transformer.pos.sliding_window and len(ids) > window:
            ids = ids[-window:]  # learned positions: the context is the last block_size tokens
        t = len(ids)
        keep = min(t, window)
        ring = torch.arange(t - keep, t, device=ids.device) % window
        causal = self._causal(t)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.k[i, slot][:, ring] = k[0, :, t - keep :].to(cache.k.dtype)
            cache.v[i, slot][:, ring] = v[0, :, t - keep :].to(cache.v.dtype)
            return causal(i, q, k, v)

        hidden = self._hidden(ids[None], attend)
        cache.lengths[slot] = t
        cache.tokens[slot] = ids.tolist()
        return self._logits(hidden[0, -1]).float()

    @torch.inference_mode()  # no autograd bookkeeping: a decode step is mostly per-operation cost
    def decode(self, cache: KVCache, slots: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """One new token for each of S slots (lengths may differ): logits (S, vocab)."""
        slots = torch.as_tensor(slots, dtype=torch.long).view(-1)
        ids = torch.as_tensor(ids, dtype=torch.long, device=cache.k.device).view(-1)
        if len(slots) != len(ids):
            raise GenforgeError(f"decode: {len(slots)} slots but {len(ids)} token ids")
        slot_list = slots.tolist()
        lengths = [cache.lengths[s] for s in slot_list]
        if any(n == 0 for n in lengths):
            raise GenforgeError("decode: every slot must be prefilled first")
        for s, tok in zip(slot_list, ids.tolist(), strict=True):
            cache.tokens[s].append(tok)
        with one_thread():
            out = self._decode(cache, slots, ids, slot_list, lengths)
        for s in slot_list:
            cache.lengths[s] += 1
        return out

    def _decode(self, cache: KVCache, slots: torch.Tensor, ids: torch.Tensor, slot_list: list[int],
                lengths: list[int]) -> torch.Tensor:  # fmt: skip
        window = cache.window
        # learned positions past the context: recompute the last block_size tokens (no cache)
        overflow = [j for j, n in enumerate(lengths) if n >= window and not self.transformer.pos.sliding_window]
        if not overflow:
            out = self._decode_cached(cache, slots, ids, lengths)
        else:
            out = torch.empty(len(slot_list), self.config.vocab_size, dtype=torch.float32, device=ids.device)
            windows = torch.tensor([cache.tokens[slot_list[j]][-window:] for j in overflow], device=ids.device)
            out[overflow] = self(windows)[:, -1].float()
            cached = [j for j in range(len(slot_list)) if j not in set(overflow)]
            if cached:
                out[cached] = self._decode_cached(cache, slots[cached], ids[cached], [lengths[j] for j in cached])
        return out

    def _decode_cached(self, cache: KVCache, rows: torch.Tensor, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """One token per row through the cache, as few tensor operations as the maths allows: a
        decode step moves (S, n_embd) activations, so each operation's fixed cost, not its
        arithmetic, is what a step costs (the blocks' forward, written for one query each)."""
        tr, cfg = self.transformer, self.config
        n, c, h = len(lengths), cfg.n_embd, cfg.n_head
        d, window, device = c // h, cache.window, ids.device
        row_list = rows.tolist()
        first = row_list[0]
        contiguous = row_list == list(range(first, first + n))
        pos = torch.tensor(lengths, device=device)
        ring = [length % window for length in lengths]
        ring_t = torch.tensor(ring, device=device) if n > 1 else None
        same_dtype = cache.k.dtype == tr.wte.weight.dtype
        span = min(max(lengths) + 1, window)  # read no more of the ring than the longest slot fills
        mask = None
        if min(lengths) + 1 < span:  # some slot fills less of the ring than the span read
            valid = torch.arange(span, device=device)[None, :] < (pos + 1).clamp(max=window)[:, None]
            mask = valid[:, None, None, :]  # (S, 1, 1, span)
        x = tr.pos.embed(F.embedding(ids, tr.wte.weight), pos)  # (S, C)
        rope = tr.pos.cos_sin(pos, max(lengths) + 1)
        if rope is not None:
            cos, sin = rope[0][:, None], rope[1][:, None]  # (S, 1, D)
        for i, block in enumerate(tr.h):
            qkv = _linear(_norm(x, block.ln_1), block.attn.qkv)
            qk = qkv[:, : 2 * c].view(n, 2 * h, d)  # queries and keys rotate together
            if rope is not None:
                qk = rotate_half(qk, cos, sin)
            q, k, v = qk[:, :h, None], qk[:, h:], qkv[:, 2 * c :].view(n, h, d)
            layer_k, layer_v = cache.k[i], cache.v[i]
            if n == 1:
                layer_k[first, :, ring[0]] = k[0]
                layer_v[first, :, ring[0]] = v[0]
            else:  # index_put needs the cache's dtype (a no-op when it is the model's)
                layer_k[rows, :, ring_t] = k.to(layer_k.dtype)
                layer_v[rows, :, ring_t] = v.to(layer_v.dtype)
            if contiguous:  # a view of the ring, no copy
                keys, values = layer_k[first : first + n, :, :span], layer_v[first : first + n, :, :span]
            else:
                keys, values = layer_k[rows, :, :span], layer_v[rows, :, :span]
            if not same_dtype:
                keys, values = keys.to(q.dtype), values.to(q.dtype)
            y = attention(q, keys, values, attn_mask=mask)  # (S, H, 1, D)
            x = x + _linear(y.view(n, c), block.attn.proj)
            x = x + block.mlp(x)
        return self._logits(_norm(x, tr.ln_f)).float()


MODELS.register("gpt", GPT)
