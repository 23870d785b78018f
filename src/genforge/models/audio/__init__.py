"""Audio model families (modality "audio") and their inference pipeline (`AudioPipeline`).
Each family module registers itself in `models.registry.MODELS` on import."""

from genforge.models.audio import (  # noqa: F401  (the "audio" pipeline and the families register on import)
    denoiser,
    diffwave,
    pipeline,
    restore,
    spectral,
    wavegan,
)
