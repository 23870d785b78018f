"""Diffusion family: the U-Net (`unet`), the forward process (`schedule`), the reverse process
(`samplers`) and the model that wires them (`model`), registered as `ddpm`."""

from genforge.models.diffusion.model import DDPM, DiffusionConfig
from genforge.models.registry import MODELS

MODELS.register("ddpm", DDPM)

__all__ = ["DDPM", "DiffusionConfig"]
