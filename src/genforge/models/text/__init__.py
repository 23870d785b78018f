"""Text models: a decoder-only transformer (`gpt`), its sampler and its inference pipeline.

Importing this package registers the `gpt` family in `models.registry.MODELS` and the text
pipeline in `models.pipeline.PIPELINES`.
"""

from genforge.models.text import gpt, pipeline  # noqa: F401  (registration)
