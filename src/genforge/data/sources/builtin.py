"""Registers the built-in sources in `base.SOURCES`, in matching order (first match wins).

Named sources come first, then kinds of path from the most specific to the catch-all image
folder, so a saved HF data set or a directory of IDX files is never taken for an image folder.
The modules only define their factories: registering here keeps the order independent of which
module happened to be imported first.
"""

import importlib

from genforge.data.sources.base import SOURCES

BUILTIN_SOURCES = ("digits", "glyphs", "mnist", "hf", "idx", "arrays", "tar", "folder")

for _name in BUILTIN_SOURCES:
    SOURCES.register(_name, importlib.import_module(f"genforge.data.sources.{_name}").FACTORY)
