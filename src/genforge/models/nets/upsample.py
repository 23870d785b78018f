"""Stride-2 transposed convolution computed as one ordinary convolution plus a pixel shuffle.

`SubpixelConvTranspose2d` holds exactly the parameters of `nn.ConvTranspose2d` (same state dict,
same function) but rearranges the kernel at each forward into the four sub-pixel kernels of the
output phases (Shi et al. 2016), because CPU backends run a dense convolution much faster than a
transposed one. Taps that do not exist in the transposed kernel stay zero, so the function class is
unchanged: this is a different computation of the same layer, not a different layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _phase_taps(kernel: int, padding: int, stride: int) -> tuple[torch.Tensor, int, int]:
    """Index table (stride, taps) into the zero-padded transposed kernel, and the input offsets.

    Output pixel o = stride*m + r reads input m + d through kernel tap k = r + padding - stride*d.
    """
    offsets = [
        d for r in range(stride) for d in range(-kernel, kernel + 1) if 0 <= r + padding - stride * d < kernel
    ]
    lo, hi = min(offsets), max(offsets)
    table = torch.full((stride, hi - lo + 1), kernel, dtype=torch.long)  # index `kernel` = the zero pad
    for r in range(stride):
        for t, d in enumerate(range(lo, hi + 1)):
            k = r + padding - stride * d
            if 0 <= k < kernel:
                table[r, t] = k
    return table, lo, hi


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """Drop-in for `nn.ConvTranspose2d(c_in, c_out, k, stride=s, padding=p, output_padding=s-1)`."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, bias: bool
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            output_padding=stride - 1,
            bias=bias,
        )
        table, lo, hi = _phase_taps(kernel_size, padding, stride)
        self.register_buffer("_taps", table, persistent=False)
        self._pad = (-lo, hi, -lo, hi)  # left, right, top, bottom

    def subpixel_weight(self) -> torch.Tensor:
        s, taps = self.stride[0], self._taps
        w = F.pad(self.weight, (0, 1, 0, 1))  # (in, out, k+1, k+1): last row/col is the zero tap
        w = w[:, :, taps[:, :, None, None], taps[None, None, :, :]]  # (in, out, s, T, s, T)
        n_taps = taps.shape[1]
        # conv2d wants (out*s*s, in, T, T) with channel order (out, row phase, col phase) for pixel_shuffle
        return w.permute(1, 2, 4, 0, 3, 5).reshape(
            self.out_channels * s * s, self.in_channels, n_taps, n_taps
        )

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        s = self.stride[0]
        bias = None if self.bias is None else self.bias.repeat_interleave(s * s)
        # conv2d is a correlation: flip nothing; the tap table already maps each offset to its tap
        y = F.conv2d(F.pad(x, self._pad), self.subpixel_weight(), bias)
        return F.pixel_shuffle(y, s)


def upsample_conv(impl: str, c_in: int, c_out: int, kernel: int, bias: bool) -> nn.ConvTranspose2d:
    """A 'same'-padded stride-2 transposed convolution (output = 2 x input) computed by `impl`."""
    pad = kernel // 2
    if impl == "subpixel":
        return SubpixelConvTranspose2d(c_in, c_out, kernel, stride=2, padding=pad, bias=bias)
    return nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=pad, output_padding=1, bias=bias)
