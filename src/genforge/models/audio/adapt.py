"""Adapting an audio model to a new voice: speakers known by name, speaker tables that grow.

A speaker-conditional audio model records its speakers' names (`config.speaker_names`, in the
order of its embedding rows), so data whose speaker ids number the speakers differently (a folder
of one new voice, say) maps onto them by name (`train/feeds/audio.py`). Fine-tuning a run
(`genforge train --init-from BASE_RUN`) on data with speakers the base never heard appends them
(`adapted_config`): the base's speakers keep their ids and their rows, and a new speaker's row
starts from the mean of the base speakers' rows (the "average voice": adaptation then moves one
row, not a random one, and the first samples already sound like speech). Every other tensor must
still match the base's (train/init_from.py says which do not).

Families: `wavegan` and `diffwave` grow their `ConditionEmbedding` speaker tables (diffwave's null
row, classifier-free guidance's "no speaker", stays last). The `mel-*` wrappers fold digit and
speaker into one joint class of the inner image model (label * num_speakers + speaker): every
inner tensor sized by the joint classes (mel-sngan's conditional norms and projection, mel-ddpm's
label embedding, mel-vae's one-hot columns of its encoder head and decoder input) is regrown
joint class by joint class, a new speaker's entry for digit k starting from the mean of the base
speakers' entries for digit k; a factored model's per-speaker tables (mel-sngan's generator norms,
`SpectralConfig.factored`) grow one row, the mean of the base speakers' rows, and its per-digit
tables stay the base's.

`--freeze-trunk` trains only `adaptation_parameters()`: for the waveform families every embedding
table plus the few layers where the condition enters or the output leaves (`adaptation_layers`);
for the mel-* wrappers the inner tensors sized by the joint classes (the `SpectralModel` override).
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn

from genforge.core.errors import ConfigError
from genforge.models.audio.nets import ConditionEmbedding


def check_speaker_names(family: str, names: list[str], num_speakers: int) -> None:
    """A config's speaker names: none (ids only) or one distinct name per speaker."""
    if names and (len(names) != num_speakers or len(set(names)) != len(names)):
        raise ConfigError(
            f"{family} config: speaker_names must name each of the num_speakers={num_speakers} speakers once, "
            f"got {len(names)} name(s) ({len(set(names))} distinct)"
        )


def adapted_config(family: str, base_config: dict[str, Any], data_fields: dict[str, Any]) -> dict[str, Any]:
    """The base run's config with the data's new speakers appended (module docstring); unchanged
    for a model that does not condition on speakers or data without new ones."""
    if not base_config.get("speaker_conditional") or not int(base_config.get("num_speakers") or 0):
        return base_config
    names = list(base_config.get("speaker_names") or [])
    data_names = list(data_fields.get("speaker_names") or [])
    new = [n for n in data_names if n not in names]
    if not new:
        return base_config
    if not names:
        raise ConfigError(
            f"--init-from: the base {family} run records no speaker names (model.json config.speaker_names), so "
            f"the data's speakers ({', '.join(data_names)}) cannot be matched to its {base_config['num_speakers']} "
            "speaker ids; retrain the base with this genforge version"
        )
    grown = names + new
    return {**base_config, "num_speakers": len(grown), "speaker_names": grown}


def grow_rows(table: torch.Tensor, sources: list[list[int]], extra: int) -> torch.Tensor:
    """A table whose row i is the mean of `table`'s rows `sources[i]` (one row: a copy, bit-exact),
    followed by `table`'s last `extra` rows (null rows) unchanged."""
    rows = [table[src].mean(0) if len(src) > 1 else table[src[0]] for src in sources]
    tail = [table[len(table) - extra :]] if extra else []
    return torch.cat([torch.stack(rows), *tail]).to(table.dtype).contiguous()


def speaker_sources(base_names: list[str], names: list[str]) -> list[list[int]]:
    """Per speaker of the adapted model: its base row, or all base rows (a new speaker: the mean)."""
    every = list(range(len(base_names)))
    return [[base_names.index(n)] if n in base_names else every for n in names]


def joint_sources(num_classes: int, base_names: list[str], names: list[str]) -> list[list[int]]:
    """`speaker_sources` over joint classes label * S + speaker (mel-* families): a new speaker's
    row for digit k is the mean of the base speakers' rows for digit k."""
    per = speaker_sources(base_names, names)
    if not num_classes:
        return per
    s_old = len(base_names)
    return [[k * s_old + i for i in src] for k in range(num_classes) for src in per]


class SpeakerAdaptation:
    """Mixin of the audio families (listed first among the bases): the `GenerativeModel`
    fine-tuning hooks for speakers known by name. Subclasses set `self.config` (with `family`,
    `speaker_names`) and may override `adaptation_layers` and `_grow_speaker_tables`."""

    @classmethod
    def adapt_base_config(cls, base_config: dict[str, Any], data_fields: dict[str, Any]) -> dict[str, Any]:
        return adapted_config(cls.family, base_config, data_fields)  # type: ignore[attr-defined]

    def adapt_base_state(
        self, base_state: dict[str, torch.Tensor], base_config: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        base_names = list(base_config.get("speaker_names") or [])
        names = list(self.config.speaker_names)  # type: ignore[attr-defined]
        if not getattr(self, "speaker_conditional", False) or names == base_names:
            return base_state
        return self._grow_speaker_tables(dict(base_state), base_names, names)

    def _grow_speaker_tables(
        self, state: dict[str, torch.Tensor], base_names: list[str], names: list[str]
    ) -> dict[str, torch.Tensor]:
        """The waveform families: every `ConditionEmbedding`'s speaker table."""
        sources = speaker_sources(base_names, names)
        for prefix, module in self.named_modules():  # type: ignore[attr-defined]
            if isinstance(module, ConditionEmbedding) and module.speakers is not None:
                key = f"{prefix}.speakers.weight"
                extra = module.speakers.num_embeddings - module.num_speakers
                # a table of another size is left as it is: the shape check then names it
                if key in state and len(state[key]) == len(base_names) + extra:
                    state[key] = grow_rows(state[key], sources, extra)
        return state

    def adaptation_layers(self) -> tuple[str, ...]:
        """fnmatch patterns of the parameters besides the embedding tables that a frozen-trunk
        fine-tune trains."""
        return ()

    def adaptation_parameters(self) -> list[str]:
        tables = [name for name, m in self.named_modules() if isinstance(m, nn.Embedding)]  # type: ignore[attr-defined]
        patterns = self.adaptation_layers()
        return [
            name
            for name, _ in self.named_parameters()  # type: ignore[attr-defined]
            if any(name.startswith(t + ".") for t in tables) or any(fnmatch(name, p) for p in patterns)
        ]


def grow_joint_tables(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    num_classes: int,
    base_names: list[str],
    names: list[str],
) -> dict[str, torch.Tensor]:
    """The mel-* families: every inner tensor sized by the joint classes, regrown joint class by
    joint class (module docstring). Only the joint class count differs between the base's config
    and the new one, so a tensor whose shape changed changed along one axis by exactly that much:
    axis 0 holds one row per joint class first (class tables, class heads; a null row after them),
    axis 1 one column per joint class last (a one-hot class vector joined after other inputs, as
    the cVAE's encoder head and decoder do). Spectral norm's power-iteration vectors (`_u`, `_v`)
    of a grown weight start afresh (the model's own), as they re-converge in a step or two."""
    sources = joint_sources(num_classes, base_names, names)
    joint_new, joint_old = len(sources), (num_classes or 1) * len(base_names)
    own = model.state_dict()
    for key, mine in own.items():
        base = state.get(key)
        if base is None or tuple(base.shape) == tuple(mine.shape):
            continue
        if key.endswith(("._u", "._v")):
            state[key] = mine.detach().clone()
            continue
        if base.ndim == 2 and base.shape[1:] == mine.shape[1:] and (len(base), len(mine)) == (len(base_names), len(names)):
            # a per-speaker table (a factored model's speaker factor): a new speaker's row is the mean
            state[key] = grow_rows(base, speaker_sources(base_names, names), 0)
            continue
        axes = [i for i in range(mine.ndim) if base.ndim == mine.ndim and base.shape[i] != mine.shape[i]]
        rest = mine.shape[axes[0]] - joint_new if len(axes) == 1 and axes[0] < 2 else -1
        if rest < 0 or base.shape[axes[0]] != joint_old + rest:
            raise ConfigError(f"--init-from: {type(model).__name__} tensor {key} {tuple(base.shape)} -> "
                              f"{tuple(mine.shape)} does not grow with the joint (digit, speaker) classes "
                              f"{joint_old} -> {joint_new}; adapting it to a new speaker is not supported")  # fmt: skip
        if axes[0] == 0:  # rows: joint classes, then `rest` null rows
            state[key] = grow_rows(base, sources, rest)
        else:  # columns: `rest` other inputs, then the joint classes' one-hot columns
            t = base.transpose(0, 1)
            grown = torch.cat([t[:rest], grow_rows(t[rest:], sources, 0)])
            state[key] = grown.transpose(0, 1).contiguous()
    return state
