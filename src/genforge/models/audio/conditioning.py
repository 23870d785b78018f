"""What an audio model is conditioned on: the digit (class) and, where the data records it, the
speaker. Every audio family resolves its training and sampling conditions here, so they refuse
bad input the same way and draw the same default conditions for samples.

Default sample conditions: labels cycle the classes (0, 1, ..., K-1, 0, ...) and speakers change
every K samples ((i // K) % S), so a grid of K columns shows each digit per row and each speaker
per column; `num_speakers` here is the model's effective count (0 when it does not use speakers).
"""

from __future__ import annotations

import torch

from genforge.core.errors import GenforgeError


def effective_speakers(num_speakers: int, speaker_conditional: bool) -> int:
    """Speakers a model conditions on: the data's count when its config asks for it, else 0."""
    return int(num_speakers) if speaker_conditional and num_speakers > 0 else 0


def training_condition(
    name: str, num_classes: int, num_speakers: int, labels: torch.Tensor | None, speakers: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (labels, speakers) a conditional model trains on, each None when it does not use it;
    a clear error when the batch lacks one it needs."""
    lab = spk = None
    if num_classes:
        if labels is None or bool((labels < 0).any()):
            raise GenforgeError(
                f"{name} is class-conditional (num_classes={num_classes}) but the batch has unlabelled clips; "
                "use a labelled dataset or train without --conditional"
            )
        lab = labels.long()
    if num_speakers:
        if speakers is None or bool((speakers < 0).any()):
            raise GenforgeError(
                f"{name} is speaker-conditional (num_speakers={num_speakers}) but the batch has clips without a "
                "speaker; set model.speaker_conditional=false"
            )
        spk = speakers.long()
    return lab, spk


def sample_condition(
    name: str,
    n: int,
    num_classes: int,
    num_speakers: int,
    labels: torch.Tensor | int | None,
    speakers: torch.Tensor | int | None,
    device: torch.device | str,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(labels, speakers) of n samples: the given ones broadcast and range-checked, else the
    defaults (module docstring); a condition the model does not use is refused."""

    def resolve(given, count: int, what: str, default: torch.Tensor) -> torch.Tensor | None:
        if not count:
            if given is not None:
                raise GenforgeError(f"{name} is not {what}-conditional; sample it without {what}s")
            return None
        if given is None:
            return default.to(device)
        ids = torch.as_tensor(given, dtype=torch.long, device=device).reshape(-1)
        ids = ids.expand(n) if ids.numel() == 1 else ids
        if ids.shape != (n,) or bool((ids < 0).any() or (ids >= count).any()):
            raise GenforgeError(f"{name}: need {n} {what} ids in 0..{count - 1}, got {tuple(ids.shape)} ids")
        return ids

    index = torch.arange(n)
    lab = resolve(labels, num_classes, "class", index % max(num_classes, 1))
    spk = resolve(speakers, num_speakers, "speaker", (index // max(num_classes, 1)) % max(num_speakers, 1))
    return lab, spk

