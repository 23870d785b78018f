"""Inference for audio runs: n clips as float32 (n, T) in [-1, 1] at the run's sample rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genforge.core.errors import GenforgeError
from genforge.models.pipeline import PIPELINES, Pipeline


@dataclass
class AudioPipeline(Pipeline):
    """Audio: `generate` -> (clips float32 (n, T), labels); `sample_rate`; speaker conditioning
    where the model has it (`speaker_conditional`, `num_speakers`, `speaker_names`)."""

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sample_rate)

    @property
    def clip_length(self) -> int:
        return int(self.model.config.length)

    @property
    def speaker_conditional(self) -> bool:
        return bool(getattr(self.model, "speaker_conditional", False))

    @property
    def num_speakers(self) -> int:
        return int(getattr(self.model.config, "num_speakers", 0) or 0) if self.speaker_conditional else 0

    @property
    def speaker_names(self) -> list[str]:
        """Names of the model's speaker ids: its config's (an adapted model knows its base's
        speakers beside its data's), else, for runs that predate them, the dataset's."""
        names = getattr(self.model.config, "speaker_names", None)
        return list(names or self.info.get("dataset", {}).get("speaker_names") or [])

    def resolve_speakers(self, n: int, speaker: int | str | None, speakers: np.ndarray | None) -> torch.Tensor | None:
        """Speaker ids of n samples: `speakers`, else n of `speaker` (an id or a name), else the
        speakers in turn; None for a model without speaker conditioning (which refuses one)."""
        if not self.speaker_conditional:
            if speaker is not None or speakers is not None:
                raise GenforgeError(f"model {self.name!r} is not speaker-conditional; omit the speaker")
            return None
        if speakers is not None:
            ids = torch.as_tensor(np.asarray(speakers), dtype=torch.long)
        elif speaker is not None:
            if isinstance(speaker, str) and not speaker.lstrip("-").isdigit():
                if speaker not in self.speaker_names:
                    raise GenforgeError(f"unknown speaker {speaker!r}; speakers: {', '.join(self.speaker_names)}")
                speaker = self.speaker_names.index(speaker)
            ids = torch.full((n,), int(speaker), dtype=torch.long)
        else:
            ids = torch.arange(n, dtype=torch.long) % max(self.num_speakers, 1)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_speakers):
            raise GenforgeError(f"speaker ids must lie in 0..{self.num_speakers - 1}")
        return ids

    @torch.no_grad()
    def generate(  # type: ignore[override]
        self,
        n: int,
        *,
        seed: int = 0,
        class_label: int | None = None,
        labels: np.ndarray | None = None,
        speaker: int | str | None = None,
        speakers: np.ndarray | None = None,
        **options: Any,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """n clips float32 (n, T) in [-1, 1] and their labels (None when unconditional)."""
        gen = torch.Generator().manual_seed(int(seed))
        lab = self.resolve_labels(n, class_label, labels)
        spk = self.resolve_speakers(n, speaker, speakers)
        if spk is not None:
            options["speakers"] = spk
        self.model.eval()
        audio = self.model.sample(n, generator=gen, labels=lab, **options)
        audio = audio.detach().float().reshape(n, -1).clamp(-1, 1).cpu().numpy().astype(np.float32)
        return audio, (lab.numpy() if lab is not None else None)

    def generate_clips(self, n: int, *, seed: int = 0, class_label: int | None = None,
                       speaker: int | str | None = None, **options: Any
                       ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:  # fmt: skip
        """`generate` that also returns the speaker ids it used (None without speaker
        conditioning): what `genforge sample` writes and the Python API returns."""
        ids = self.resolve_speakers(n, speaker, None)
        speakers = None if ids is None else ids.numpy()
        audio, labels = self.generate(n, seed=seed, class_label=class_label, speakers=speakers, **options)
        return audio, labels, speakers

    @torch.no_grad()
    def restore(self, audio: np.ndarray) -> np.ndarray:
        """A restoration run (task "restore", e.g. speech enhancement): clips float32 (T,) or
        (n, T) at the run's sample rate (callers resample first: `audio.resample`) -> the
        restored clips, same shape. The model's `restore` takes any length."""
        self.require_restoration()
        x = np.asarray(audio, dtype=np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, x.shape[-1])))
        self.model.eval()
        out = self.model.restore(batch).detach().float().clamp(-1, 1).cpu().numpy()
        return out.reshape(x.shape).astype(np.float32)


PIPELINES.register("audio", AudioPipeline)
