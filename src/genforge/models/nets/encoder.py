"""A convolutional feature extractor that ends in global average pooling (no spatial head),
so its features are shift-tolerant and independent of the image size: the backbone of the
contrastive encoder."""

from __future__ import annotations

import torch
from torch import nn

from genforge.models.nets.conv import conv_block, stage_widths


class PooledConvEncoder(nn.Module):
    """Image (B,C,H,W) -> features (B, out_dim): a 3x3 stem at full resolution, one stride-2
    block plus one 3x3 block per stage, then the spatial mean."""

    def __init__(self, channels: int, image_size: int, base_channels: int = 32, max_channels: int = 128):
        super().__init__()
        widths = stage_widths(image_size, base_channels, max_channels)
        layers = [conv_block(channels, base_channels)]
        for c_in, c_out in zip([base_channels, *widths[:-1]], widths, strict=True):
            layers += [conv_block(c_in, c_out, stride=2), conv_block(c_out, c_out)]
        self.blocks = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3))
