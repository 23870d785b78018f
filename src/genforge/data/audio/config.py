"""`AudioIngestConfig`: every option of `genforge data ingest` on audio, saved beside the dataset
(`ingest.json`, as the image and text ingests save theirs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genforge.core.errors import ConfigError


@dataclass
class AudioIngestConfig:
    # labels: a file-name pattern such as "{label}_{speaker}_{take}" (matched against the name
    # without its extension; `label` is the class, other names become per-item fields, `{}`
    # matches anything unnamed); None: the class is the sub-folder name, as for images
    label_pattern: str | None = None
    # HF data sets: the Audio column (None: the Audio feature, else a column named "audio"), the
    # label column (None: the ClassLabel one, else "label"...), columns kept as per-item fields
    # (None: "speaker" / "speaker_id" where present, named "speaker")
    audio_column: str | None = None
    label_column: str | None = None
    field_columns: list[str] | None = None
    limit: int | None = None  # read at most this many source files
    # validation: longer files are quarantined; a clip whose peak is below `silence_dbfs` is
    # all-silent (quarantined); a clip with at least `clipping_share` of its samples at
    # |x| >= `clip_level` is flagged as clipped (kept, counted in the report)
    max_seconds: float = 30.0
    silence_dbfs: float = -60.0
    clip_level: float = 0.999
    clipping_share: float = 0.01
    # processing, in this order: mono mixdown (channel mean) -> resampling (soxr HQ) to
    # `sample_rate` (None: the source's most common rate) -> trim -> loudness -> fixed length
    sample_rate: int | None = None
    # trim: leading/trailing `trim_frame_ms` frames quieter than the clip's loudest frame by more
    # than `trim_db` are silence; `trim_margin_ms` of it is kept on each side
    trim: bool = True
    trim_db: float = 40.0
    trim_frame_ms: float = 10.0
    trim_margin_ms: float = 20.0
    # loudness of the trimmed clip: `rms` (dBFS) or `lufs` (ITU-R BS.1770 via pyloudnorm; clips
    # shorter than its 0.4 s gating block fall back to RMS, counted), or none; a gain that would
    # lift the peak above `peak_limit` is lowered to meet it (counted)
    loudness: Literal["rms", "lufs", "none"] = "rms"
    loudness_target: float = -20.0
    peak_limit: float = 0.99
    # fixed length: shorter clips are padded with zeros (`centre`: the audio in the middle;
    # `end`: the audio first, zeros after), longer ones cropped (`centre` or `start`)
    clip_seconds: float = 1.0
    pad: Literal["centre", "end"] = "centre"
    crop: Literal["centre", "start"] = "centre"
    # duplicates: exact (same processed samples) and near (cosine of log-mel fingerprints);
    # `drop` keeps one clip per group (held-out copies first), `keep-first` only reports
    dup_policy: Literal["drop", "keep-first"] = "drop"
    near_dup_threshold: float = 0.995
    # splits: val carved from train, stratified by label (seeded), or whole groups of a
    # per-item field (`group_by: speaker`: no speaker in two splits); a source's own
    # train/val/test folders are kept
    group_by: str | None = None
    val_fraction: float | None = None  # None: 0.1, or 0 when the source has val or test
    seed: int = 0
    # decode processes; 0: in-process. On FSDD's PCM WAVs a worker round trip (pickling the
    # samples both ways) costs about what decoding them does, and 2 processes measured slower
    # (bench/results/audio_ingest.md); costly formats (OGG, MP3) on idle cores may gain from 2
    workers: int = 0
    report_samples: int = 2  # clips per class with a player and a spectrogram in the report

    def __post_init__(self) -> None:
        checks = [
            (self.limit is None or self.limit >= 1, "limit", "a positive integer", self.limit),
            (self.max_seconds > 0, "max_seconds", "a positive number of seconds", self.max_seconds),
            (self.silence_dbfs < 0, "silence_dbfs", "a negative dBFS level", self.silence_dbfs),
            (0 < self.clip_level <= 1, "clip_level", "a level in (0, 1]", self.clip_level),
            (0 < self.clipping_share <= 1, "clipping_share", "a share in (0, 1]", self.clipping_share),
            (
                self.sample_rate is None or 1000 <= self.sample_rate <= 384000,
                "sample_rate",
                "a rate in Hz between 1000 and 384000",
                self.sample_rate,
            ),
            (self.trim_db > 0, "trim_db", "a positive number of dB", self.trim_db),
            (self.trim_frame_ms > 0, "trim_frame_ms", "a positive number of ms", self.trim_frame_ms),
            (self.trim_margin_ms >= 0, "trim_margin_ms", "0 or more ms", self.trim_margin_ms),
            (
                self.loudness_target < 0,
                "loudness_target",
                "a negative level (dBFS or LUFS)",
                self.loudness_target,
            ),
            (0 < self.peak_limit <= 1, "peak_limit", "a level in (0, 1]", self.peak_limit),
            (
                0 < self.clip_seconds <= self.max_seconds,
                "clip_seconds",
                f"a positive number of seconds, at most max_seconds ({self.max_seconds:g})",
                self.clip_seconds,
            ),
            (
                0 < self.near_dup_threshold <= 1,
                "near_dup_threshold",
                "a cosine similarity in (0, 1]",
                self.near_dup_threshold,
            ),
            (
                self.val_fraction is None or 0 <= self.val_fraction < 1,
                "val_fraction",
                "a number in [0, 1)",
                self.val_fraction,
            ),
            (self.workers >= 0, "workers", "0 or more", self.workers),
            (self.report_samples >= 0, "report_samples", "0 or more", self.report_samples),
        ]
        for ok, name, expected, value in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {value!r}")
        if self.group_by is not None and not self.group_by.isidentifier():
            raise ConfigError(
                f"group_by: expected a per-item field name such as 'speaker', got {self.group_by!r}"
            )
        if self.label_pattern is not None:
            from genforge.data.audio.pattern import LabelPattern

            LabelPattern(self.label_pattern)  # a malformed pattern is a config error now, not per file
