"""Audio model families (modality "audio") and their inference pipeline (`AudioPipeline`).
Each family module registers itself in `models.registry.MODELS` on import."""

from genforge.models.audio import pipeline  # noqa: F401  (registers the "audio" pipeline)
