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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

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
# step(cache, slots, ids, lengths) -> logits (S, vocab): one token per slot through the KV cache
CachedStep = Callable[["KVCache", list[int], list[int], list[int]], torch.Tensor]


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
    5.8 ms in fp32 (torch 2.13, Xeon with AMX); the matmuls around it keep bf16's speed. fp32
    inputs too leave autocast, which would cast them to bf16."""
    if q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


@contextlib.contextmanager
def small_ops() -> Iterator[None]:
    """Run the block on one intra-op thread, with oneDNN off. A decode step is ~50 operations on
    (S, n_embd) activations whose cost is fixed overhead: an OpenMP team only adds
    synchronisation, and waits for a descheduled member when another process holds a core
    (sampling 300 tokens of one stream ran at 862 tokens/s on one thread against 70 on two with
    the second core busy; 16 streams 4,490 against 4,217), and oneDNN's GELU sets up a primitive
    per call (5x torch's own kernel on (1, 512) values; they agree to 4e-7). The switch is
    process-wide while the block runs: a decode loop owns its thread, as the pipeline and the
    service's scheduler run it."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    if threads == 1 and not onednn:
        yield
        return
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


# --- positions ---------------------------------------------------------------------------------


class RotaryPositions(nn.Module):
    """RoPE (Su et al. 2021, GPT-NeoX's half-split layout): queries and keys are rotated by their
    absolute position, so their dot product depends on the offset only."""

    sliding_window = True  # any length: attention sees the last block_size positions

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.head_dim, self.base = cfg.n_embd // cfg.n_head, cfg.rope_base
        # cos, sin and the decode step's signed sin per position, (N, D) fp32, grown on demand,
        # and the identity and half-swap matrices (D, D): a lookup per forward instead of
        # recomputing them (plain attributes, not buffers: not state, never saved or averaged)
        self._table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._eye_swap: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0), torch.empty(0))

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x

    def embed_rows(self, x: torch.Tensor, positions: list[int]) -> torch.Tensor:
        return x

    def _tables(self, longest: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        table = self._table
        if table is None or len(table[0]) < longest or table[0].device != device:
            size = max(longest, 2 * len(table[0]) if table is not None else 1024)
            half = self.head_dim // 2
            inv_freq = self.base ** (-torch.arange(half, device=device, dtype=torch.float64) / half)
            angles = torch.arange(size, device=device, dtype=torch.float64)[:, None] * inv_freq
            angles = torch.cat((angles, angles), -1)  # fp64: exact angles for positions in the millions
            cos, sin = angles.cos().float(), angles.sin().float()
            # rotate_half(x) * sin == x @ swap * signed, swap the matrix exchanging the halves:
            # the sign moves into the table (the decode step's rotation, row_rotation)
            signed = torch.cat((-sin[:, :half], sin[:, half:]), -1)
            table = self._table = (cos, sin, signed)
            eye = torch.eye(2 * half, device=device)
            swap = torch.cat((torch.arange(half, 2 * half), torch.arange(half))).to(device)
            self._eye_swap = (eye, eye[swap])
        return table

    def cos_sin(self, positions: torch.Tensor, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (*positions.shape, D) of `positions`, all below `longest`."""
        cos, sin, _ = self._tables(longest, positions.device)
        return cos[positions], sin[positions]

    def rotation(self, positions: torch.Tensor, longest: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """positions (B|1, T), all below `longest` -> a function rotating (B, T, heads, D) queries
        and keys (all heads of both at once: one set of operations per layer)."""
        cos, _, signed = self._tables(longest, positions.device)
        cos, signed = cos[positions].unsqueeze(2), signed[positions].unsqueeze(2)  # (B|1, T, 1, D)
        half = self.head_dim // 2
        # rotate_half's numbers in 3 operations instead of 7 (and no zero-filled gradients of
        # slices in the backward): the half swap is a roll, its sign is in the `signed` table
        return lambda x: torch.addcmul(x * cos.to(x.dtype), x.roll(half, -1), signed.to(x.dtype))

    def row_rotation(
        self, positions: list[int], device: torch.device
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function rotating the queries and keys of a decode step: (heads, D) at one position,
        or (S, heads, D) with row s at positions[s]. Each position's rotation is a (D, D) matrix,
        cos on the diagonal and the signed sin where the half swap sends a channel, built once
        per step: every layer then rotates with one matrix product instead of six elementwise
        operations (the same numbers to a rounding: a product sums two non-zero terms)."""
        cos, _, signed = self._tables(max(positions) + 1, device)
        eye, swap = self._eye_swap
        if len(positions) == 1:  # views of one table row: no lookup kernel
            r = torch.addcmul(eye * cos[positions[0]], swap, signed[positions[0]])
            return lambda x: torch.mm(x, r.to(x.dtype))
        at = torch.tensor(positions, device=device)
        r = torch.addcmul(eye * cos[at][:, None], swap, signed[at][:, None])  # (S, D, D)
        return lambda x: torch.bmm(x, r.to(x.dtype))


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

    def embed_rows(self, x: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """x (S, C) + the embedding of positions[s] on row s (a decode step)."""
        w = self.wpe.weight
        return x + (w[positions[0]] if len(positions) == 1 else w[torch.tensor(positions, device=x.device)])

    def rotation(self, positions: torch.Tensor, longest: int) -> None:
        return None

    def row_rotation(self, positions: list[int], device: torch.device) -> None:
        return None


POSITIONS: Registry[type[nn.Module]] = Registry("position encoding")
POSITIONS.register("rope", RotaryPositions)
POSITIONS.register("learned", LearnedPositions)


# --- blocks ------------------------------------------------------------------------------------


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias) for rows (S, in) or one vector (in,): a vector takes a matrix-vector
    product, which at decode sizes costs ~60% of the (1, in) matrix product's time."""
    if x.dim() == 1:
        return torch.mv(weight, x) if bias is None else torch.addmv(bias, weight, x)
    return F.linear(x, weight, bias)


def _norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _add_linear(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x + y @ weight.T (+ bias), the residual add folded into the product (one operation); rows
    or vectors as `_linear`."""
    out = torch.addmv(x, weight, y) if y.dim() == 1 else torch.addmm(x, y, weight.t())
    return out if bias is None else out + bias


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
        qkv = self.qkv(x)
        if qkv.device.type == "cpu":
            # attention runs in fp32 on CPU (`attention`): one cast of q, k and v together, before
            # RoPE, instead of three after it (and the rotation's tables need no cast)
            qkv = qkv.float()
        # split and chunk, not slices: their backward is one cat, a slice's a zero fill and a copy
        qk, v = qkv.view(b, t, 3 * h, c // h).split((2 * h, h), dim=2)  # q and k: rotated together
        if rotate is not None:
            qk = rotate(qk)
        q, k = qk.transpose(1, 2).chunk(2, dim=1)
        y = attend(self.index, q, k, v.transpose(1, 2)).transpose(1, 2)
        device = y.device.type
        if torch.is_autocast_enabled(device):  # fp32 attention (CPU): cast and gather in one copy
            y = y.to(torch.get_autocast_dtype(device), memory_format=torch.contiguous_format)
        return self.drop(self.proj(y.reshape(b, t, c)))


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
        x = x + self.attn(self.ln_1(x), rotate, attend)
        return x + self.drop(self.mlp(x))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        # the layers' own forwards (not F.linear on their weights), here and in the training
        # path: differentially private training computes per-example gradients from hooks on
        # them (train/privacy.py); the numbers are the same
        return self.proj(F.gelu(self.fc(self.ln_2(x))))


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
    # DP-SGD (train/privacy.py) trains the whole network, with the two changes Opacus' per-example
    # gradients need (see private_training_problems): an untied head and LayerNorm biases
    private_defaults = {"tie_weights": False, "bias": True}

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
        self._weights: _DecodeWeights | None = None  # the decode step's tensors (_decode_weights)
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

    def compile_regions(self) -> list[nn.Module]:
        # the whole forward (embedding, RoPE, every block, the head) as one graph: at nanoGPT's
        # CPU size it stepped 1.2x faster than the blocks compiled alone (one shared graph, but a
        # compiled call and its backward per block, and the glue between them eager), for a
        # longer cold compile (~45 s against ~30 s for 4 blocks; train/compile.py). RoPE's tables
        # are built here, so the graph never sees them appear (that traced a second graph)
        if isinstance(self.transformer.pos, RotaryPositions):
            self.transformer.pos._tables(self.config.block_size, self.transformer.wte.weight.device)
        return [self]

    def private_training_problems(self) -> list[str]:
        problems = []
        if self.config.tie_weights:
            # the embedding's hook would see only the lookup's part of the tied weight's gradient,
            # so the clipping would miss the head's; a head layer sharing the Parameter would fix
            # that but give one tensor two state-dict names, which safetensors refuses to save
            problems.append("model.tie_weights: the tied output layer uses the embedding matrix outside the "
                            "embedding's forward, which Opacus cannot give per-example gradients; use false")  # fmt: skip
        if not self.config.bias:
            # opacus 1.6's LayerNorm per-example gradient reads layer.bias.requires_grad, which
            # fails on a LayerNorm without a bias
            problems.append(
                "model.bias: Opacus' per-example gradient of a LayerNorm needs its bias; use true"
            )
        if self.config.positions == "learned":
            problems.append("model.positions: learned positions are looked up once for the whole batch, so "
                            "Opacus cannot split their gradient per example; use rope")  # fmt: skip
        return problems

    # --- forward -----------------------------------------------------------------------------

    def _hidden(self, idx: torch.Tensor, attend: Attend) -> torch.Tensor:
        """Final hidden states (B, T, C) of sequences `idx` (B, T) at positions 0..T-1."""
        tr = self.transformer
        positions = torch.arange(idx.shape[1], device=idx.device)[None]
        x = tr.drop(tr.pos.embed(tr.wte(idx), positions))
        rotate = tr.pos.rotation(positions, idx.shape[1])
        for block in tr.h:
            x = block(x, rotate, attend)
        return tr.ln_f(x)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.tie_weights:
            return F.linear(hidden, self.transformer.wte.weight)
        return self.transformer.lm_head(hidden)

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
        self._decode_weights()
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
    def decode(
        self,
        cache: KVCache,
        slots: torch.Tensor | Sequence[int],
        ids: torch.Tensor | Sequence[int],
        step: CachedStep | None = None,
    ) -> torch.Tensor:
        """One new token for each of S slots (lengths may differ): logits (S, vocab). Slots and ids
        may be tensors or lists of ints (a list skips a tensor round trip). `step` replaces the
        torch step through the cache (`_decode_cached`'s contract), e.g. ONNX Runtime's
        (models.text.onnx_decode)."""
        slot_list, id_list, lengths = self.begin_decode(cache, slots, ids)
        with small_ops():
            out = self._decode(cache, slot_list, id_list, lengths, step or self._decode_cached)
        for s in slot_list:
            cache.lengths[s] += 1
        return out

    def begin_decode(
        self, cache: KVCache, slots: torch.Tensor | Sequence[int], ids: torch.Tensor | Sequence[int]
    ) -> tuple[list[int], list[int], list[int]]:
        """A decode step's checks and token bookkeeping: (slots, ids, lengths before the step) as
        lists; the step then runs and adds one to each slot's length."""
        slot_list, id_list = _ints(slots), _ints(ids)
        if len(slot_list) != len(id_list):
            raise GenforgeError(f"decode: {len(slot_list)} slots but {len(id_list)} token ids")
        lengths = [cache.lengths[s] for s in slot_list]
        if 0 in lengths:
            raise GenforgeError("decode: every slot must be prefilled first")
        if id_list and not 0 <= min(id_list) <= max(id_list) < self.config.vocab_size:
            raise GenforgeError(f"decode: token ids must be in [0, {self.config.vocab_size}), got {id_list}")
        for s, tok in zip(slot_list, id_list, strict=True):
            cache.tokens[s].append(tok)
        return slot_list, id_list, lengths

    def _decode(self, cache: KVCache, slots: list[int], ids: list[int], lengths: list[int],
                cached: CachedStep) -> torch.Tensor:  # fmt: skip
        window = cache.window
        # learned positions past the context: recompute the last block_size tokens (no cache)
        overflow = [] if self.transformer.pos.sliding_window else [j for j, n in enumerate(lengths) if n >= window]
        if not overflow:
            return cached(cache, slots, ids, lengths)
        device = cache.k.device
        out = torch.empty(len(slots), self.config.vocab_size, dtype=torch.float32, device=device)
        windows = torch.tensor([cache.tokens[slots[j]][-window:] for j in overflow], device=device)
        out[overflow] = self(windows)[:, -1].float()
        rest = [j for j in range(len(slots)) if j not in set(overflow)]
        if rest:
            out[rest] = cached(
                cache, [slots[j] for j in rest], [ids[j] for j in rest], [lengths[j] for j in rest]
            )
        return out

    def _decode_cached(
        self, cache: KVCache, slots: list[int], ids: list[int], lengths: list[int]
    ) -> torch.Tensor:
        """One token per slot through the cache, as few tensor operations as the maths allows: a
        decode step moves (S, n_embd) activations, so each operation's fixed cost (and each
        Python-side lookup or index), not its arithmetic, is what a step costs. The blocks'
        forward written for one query each: 11 operations per layer for one slot."""
        tr, cfg = self.transformer, self.config
        h, d = cfg.n_head, self.head_dim
        span = min(max(lengths) + 1, cache.window)  # read no more of the ring than the longest slot fills
        if len(slots) == 1:
            x, store, attend = self._one_slot(cache, slots[0], ids[0], lengths[0], span)
        else:
            x, store, attend = self._many_slots(cache, slots, ids, lengths, span)
        rows = x.shape[:-1]  # () for one slot: its activations are vectors
        x = tr.pos.embed_rows(x, lengths)
        rotate = tr.pos.row_rotation(lengths, x.device)
        weights = self._weights if self._weights is not None else self._decode_weights()
        for i, w in enumerate(weights.blocks):
            qkv = _linear(torch.layer_norm(x, x.shape[-1:], *w.ln_1), *w.qkv).view(*rows, 3 * h, d)
            q, k, v = qkv.view(*rows, 3, h, d).unbind(-3)
            if rotate is not None:  # one product rotates all heads of q and k (and v, left unused)
                q, k, _ = rotate(qkv).view(*rows, 3, h, d).unbind(-3)
            store(i, k, v)
            x = _add_linear(x, attend(i, q), *w.proj)
            x = _add_linear(x, F.gelu(_linear(torch.layer_norm(x, x.shape[-1:], *w.ln_2), *w.fc)), *w.out)
        logits = _linear(torch.layer_norm(x, x.shape[-1:], *weights.ln_f), weights.head)
        return logits.view(len(slots), -1).float()

    def _one_slot(self, cache: KVCache, slot: int, token: int, length: int, span: int) -> tuple:
        """The first activations (C,) and the cache writes and reads of one slot: per-layer views
        made with one call per step (unbind), plain products for the attention of one query."""
        x = self.transformer.wte.weight[token]  # a view
        ring = length % cache.window
        write_k = cache.k.select(1, slot).select(2, ring).unbind(0)  # per layer (H, D)
        write_v = cache.v.select(1, slot).select(2, ring).unbind(0)
        keys = cache.k.select(1, slot).narrow(2, 0, span).unbind(0)  # per layer (H, span, D)
        values = cache.v.select(1, slot).narrow(2, 0, span).unbind(0)
        convert = cache.k.dtype != x.dtype  # a cache in another dtype than the model's
        scale, zero = self.head_dim**-0.5, x.new_zeros(())

        def store(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            write_k[i].copy_(k)  # converts to the cache's dtype
            write_v[i].copy_(v)

        def attend(i: int, q: torch.Tensor) -> torch.Tensor:
            k, v = (keys[i].to(q.dtype), values[i].to(q.dtype)) if convert else (keys[i], values[i])
            # (H, 1, D) @ (H, D, span), scaled: the scores of one query
            scores = torch.baddbmm(zero, q.unsqueeze(1), k.transpose(1, 2), beta=0, alpha=scale)
            return torch.bmm(torch.softmax(scores, -1), v).view(-1)

        return x, store, attend

    def _many_slots(
        self, cache: KVCache, slots: list[int], ids: list[int], lengths: list[int], span: int
    ) -> tuple:
        """The first activations (S, C) and the cache writes and reads of S slots (index tensors;
        a mask where a slot fills less of the ring than the span read)."""
        n, window, device = len(slots), cache.window, cache.k.device
        x = F.embedding(torch.tensor(ids, device=device), self.transformer.wte.weight)
        first = slots[0]
        index = torch.tensor(slots, device=device)
        at = (index, slice(None), torch.tensor([p % window for p in lengths], device=device))
        # a contiguous run of slots is read as a view of the ring, no copy
        read = slice(first, first + n) if slots == list(range(first, first + n)) else index
        mask = None
        if min(lengths) + 1 < span:
            filled = torch.tensor([min(p + 1, window) for p in lengths], device=device)
            mask = (torch.arange(span, device=device) < filled[:, None])[:, None, None, :]  # (S, 1, 1, span)

        def store(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            layer_k, layer_v = cache.k[i], cache.v[i]  # index_put needs the cache's dtype
            layer_k[at], layer_v[at] = k.to(layer_k.dtype), v.to(layer_v.dtype)

        def attend(i: int, q: torch.Tensor) -> torch.Tensor:
            keys, values = (c[i][read, :, :span].to(q.dtype) for c in (cache.k, cache.v))
            return attention(q.unsqueeze(2), keys, values, attn_mask=mask).view(n, -1)  # (S, C)

        return x, store, attend

    def _decode_weights(self) -> _DecodeWeights:
        """The tensors a decode step reads, looked up once (`new_cache` refreshes them): a
        module attribute lookup costs ~1 us and a step would make ~100."""
        tr = self.transformer

        def tensors(layer: nn.Module) -> tuple:  # (weight, bias, eps) of a norm, (weight, bias) of a linear
            eps = (layer.eps,) if isinstance(layer, nn.LayerNorm) else ()
            return (layer.weight, layer.bias, *eps)

        blocks = [
            _BlockWeights(*map(tensors, (b.ln_1, b.attn.qkv, b.attn.proj, b.ln_2, b.fc, b.proj)))
            for b in tr.h
        ]
        head = tr.wte.weight if self.config.tie_weights else tr.lm_head.weight
        self._weights = _DecodeWeights(blocks, tensors(tr.ln_f), head)
        return self._weights


class _BlockWeights(NamedTuple):
    ln_1: tuple  # (weight, bias, eps)
    qkv: tuple  # (weight, bias)
    proj: tuple
    ln_2: tuple
    fc: tuple
    out: tuple  # the MLP's output projection


class _DecodeWeights(NamedTuple):
    blocks: list[_BlockWeights]
    ln_f: tuple
    head: torch.Tensor


def _ints(values: torch.Tensor | Sequence[int]) -> list[int]:
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).tolist()
    return [int(v) for v in values]


MODELS.register("gpt", GPT)
