"""Importing this module registers every built-in model family."""

import importlib

FAMILY_MODULES = ("gan", "vae", "dae", "diffusion", "contrastive", "mmd", "text", "audio")

for _m in FAMILY_MODULES:
    importlib.import_module(f"genforge.models.{_m}")
