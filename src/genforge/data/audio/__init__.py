"""Audio as a modality of the data stage: the canonical audio dataset (`AudioDataset`,
registered under "audio"); sources, decoding and processing register the "audio" ingester."""

from __future__ import annotations

from genforge.data.audio.canonical import AudioDataset, AudioSplit, AudioSplitData, write_audio_dataset

__all__ = ["AudioDataset", "AudioSplit", "AudioSplitData", "write_audio_dataset"]
