"""1-D networks of the waveform families: WaveGAN's generator and discriminator (Donahue et al.
2019) and DiffWave's denoiser (Kong et al. 2021), with the blocks they share (conditioning
embeddings, phase shuffle, folding samples into channels).

The networks know nothing of their objective: the families (`wavegan.py`, `diffwave.py`) wire
them to a loss and a sampler. Waves are float (B, T) at the model's edge and (B, C, L) inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genforge.models.diffusion.unet import timestep_embedding


class ConditionEmbedding(nn.Module):
    """A class embedding plus a speaker embedding, summed: (labels, speakers) -> (B, dim).

    With `null`, each table has one extra row (index = its count) that stands for "no condition",
    which classifier-free guidance trains by dropping conditions and samples against. A table is
    absent when its count is 0; the embedding is None when both are.
    """

    def __init__(self, num_classes: int, num_speakers: int, dim: int, null: bool = False):
        super().__init__()
        extra = 1 if null else 0
        self.num_classes, self.num_speakers = num_classes, num_speakers
        self.classes = nn.Embedding(num_classes + extra, dim) if num_classes else None
        self.speakers = nn.Embedding(num_speakers + extra, dim) if num_speakers else None

    @property
    def active(self) -> bool:
        return self.classes is not None or self.speakers is not None

    def forward(self, labels: torch.Tensor | None, speakers: torch.Tensor | None) -> torch.Tensor | None:
        out = None
        for table, ids in ((self.classes, labels), (self.speakers, speakers)):
            if table is not None and ids is not None:
                e = table(ids)
                out = e if out is None else out + e
        return out


class PhaseShuffle(nn.Module):
    """WaveGAN's phase shuffle: in training, shift each example's feature map in time by a draw
    from [-radius, radius] (reflection-padded), so the discriminator cannot tell real from fake
    by the phase of periodic artefacts. Draws come from the global RNG, which the trainer saves."""

    def __init__(self, radius: int):
        super().__init__()
        self.radius = int(radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.radius == 0:
            return x
        r, length = self.radius, x.shape[-1]
        shifts = torch.randint(-r, r + 1, (x.shape[0],), device=x.device)
        padded = F.pad(x, (r, r), mode="reflect")
        # example b reads padded[..., r - s_b : r - s_b + L]: its map moved right by s_b
        idx = (r - shifts)[:, None] + torch.arange(length, device=x.device)[None]
        return padded.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))


def fold(wave: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, T) -> (B, factor, ceil(T / factor)): each run of `factor` samples becomes one frame's
    channels (WaveGlow's squeeze), the end zero-padded; `unfold` undoes it."""
    b, t = wave.shape
    frames = -(-t // factor)
    x = F.pad(wave, (0, frames * factor - t)) if frames * factor != t else wave
    return x.reshape(b, frames, factor).transpose(1, 2)


def unfold(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, factor, frames) -> (B, length)."""
    b, factor, frames = x.shape
    return x.transpose(1, 2).reshape(b, frames * factor)[:, :length]


# --- WaveGAN ---------------------------------------------------------------------------------


def wavegan_stages(length: int, stride: int, stages: int) -> int:
    """The generator's starting length: the smallest L with L * stride**stages >= length."""
    return -(-length // stride**stages)


class WaveGenerator(nn.Module):
    """z (B, latent) [+ condition] -> dense -> (widths[0], L0) -> one x`stride` upsampling stage
    per further width (nearest upsampling + conv, or a transposed conv as in the paper) -> 1
    channel -> tanh, cropped to `length`. The condition embedding is concatenated to z."""

    def __init__(self, latent_dim: int, length: int, widths: list[int], kernel: int, stride: int,
                 upsample: str, cond_dim: int = 0):  # fmt: skip
        super().__init__()
        self.length, self.upsample_mode, self.stride = length, upsample, stride
        self.start = wavegan_stages(length, stride, len(widths))
        self.width0 = widths[0]
        self.fc = nn.Linear(latent_dim + cond_dim, widths[0] * self.start)
        outs = [*widths[1:], 1]
        self.convs = nn.ModuleList()
        for c_in, c_out in zip(widths, outs, strict=True):
            if upsample == "transposed":
                pad = (kernel - stride + 1) // 2
                # output length exactly stride x input: output_padding = stride - kernel + 2 * pad (0 or 1)
                self.convs.append(
                    nn.ConvTranspose1d(
                        c_in, c_out, kernel, stride, padding=pad, output_padding=stride - kernel + 2 * pad
                    )
                )
            else:
                self.convs.append(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z if cond is None else torch.cat([z, cond], 1)).view(z.shape[0], self.width0, self.start)
        for conv in self.convs:
            h = F.relu(h)
            if self.upsample_mode != "transposed":
                h = F.interpolate(h, scale_factor=self.stride, mode="nearest")
            h = conv(h)
        return torch.tanh(h[:, 0, : self.length])


class WaveDiscriminator(nn.Module):
    """(B, T) -> strided convs (LeakyReLU 0.2, phase shuffle after each but the last) -> linear
    logit; conditional: plus the projection <embed(condition), features> (Miyato & Koyama 2018)."""

    def __init__(self, length: int, widths: list[int], kernel: int, stride: int, shuffle: int,
                 num_classes: int = 0, num_speakers: int = 0, spectral_norm: bool = False):  # fmt: skip
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.convs = nn.ModuleList()
        c_in, size = 1, length
        for w in widths:
            self.convs.append(wrap(nn.Conv1d(c_in, w, kernel, stride, padding=kernel // 2)))
            c_in, size = w, (size + 2 * (kernel // 2) - kernel) // stride + 1
        self.shuffle = PhaseShuffle(shuffle)
        self.features = c_in * size
        self.head = wrap(nn.Linear(self.features, 1))
        self.embed = ConditionEmbedding(num_classes, num_speakers, self.features)
        if self.embed.active:
            for table in (self.embed.classes, self.embed.speakers):
                if table is not None:
                    nn.init.normal_(table.weight, std=1.0 / math.sqrt(self.features))

    def forward(self, x: torch.Tensor, cond: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
                ) -> torch.Tensor:  # fmt: skip
        h = x.unsqueeze(1)
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), 0.2)
            if i < len(self.convs) - 1:
                h = self.shuffle(h)
        h = h.flatten(1)
        out = self.head(h).squeeze(1)
        e = self.embed(*cond) if cond is not None else None
        return out if e is None else out + (e * h).sum(1)


# --- DiffWave --------------------------------------------------------------------------------


class ResidualLayer(nn.Module):
    """DiffWave's residual layer: x + step projection -> dilated conv (+ condition) -> tanh * sigmoid
    gate -> 1x1 conv split into the residual (added to x, scaled by 1/sqrt 2) and the skip."""

    def __init__(self, channels: int, dilation: int, emb_dim: int, kernel: int):
        super().__init__()
        self.step = nn.Linear(emb_dim, channels)
        self.cond = nn.Linear(emb_dim, 2 * channels)
        self.conv = nn.Conv1d(
            channels, 2 * channels, kernel, padding=dilation * (kernel // 2), dilation=dilation
        )
        self.out = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, step: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.conv(x + self.step(step)[:, :, None])
        if cond is not None:
            h = h + self.cond(cond)[:, :, None]  # a global condition: one bias per channel
        gate, filt = h.chunk(2, dim=1)
        residual, skip = self.out(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class DiffWaveNet(nn.Module):
    """(x_t (B, T), t (B,), labels, speakers) -> eps or v (B, T).

    The wave is folded `fold` samples per frame into channels first (`fold`), so the layers run
    at T / fold frames: on a CPU the dilated convolutions cost `fold` times less, and the
    receptive field in samples grows `fold` times (with dilations cycling 1, 2, ..., 2**(cycle-1)).
    Labels and speakers index embeddings with a null row each (classifier-free guidance).
    """

    def __init__(self, length: int, channels: int, layers: int, cycle: int, kernel: int, fold: int,
                 num_classes: int = 0, num_speakers: int = 0):  # fmt: skip
        super().__init__()
        self.length, self.fold, self.emb_in = length, fold, channels
        emb_dim = 4 * channels
        self.step_mlp = nn.Sequential(
            nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU()
        )
        self.embed = ConditionEmbedding(num_classes, num_speakers, emb_dim, null=True)
        self.inp = nn.Conv1d(fold, channels, 1)
        self.layers = nn.ModuleList(
            ResidualLayer(channels, 2 ** (i % cycle), emb_dim, kernel) for i in range(layers)
        )
        self.skip_out = nn.Conv1d(channels, channels, 1)
        self.out = nn.Conv1d(channels, fold, 1)
        nn.init.zeros_(self.out.weight)  # starts predicting 0: the mean of the noise
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                speakers: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        step = self.step_mlp(timestep_embedding(t, self.emb_in))
        cond = self.embed(labels, speakers)
        h = F.relu(self.inp(fold(x, self.fold)))
        skips = 0.0
        for layer in self.layers:
            h, skip = layer(h, step, cond)
            skips = skips + skip
        h = F.relu(self.skip_out(skips / math.sqrt(len(self.layers))))
        return unfold(self.out(h), self.length)
