"""`genforge data ingest` on audio: source -> decoded, validated, processed, deduplicated, split
canonical audio dataset + report.

Steps, each recorded in the manifest (`process.steps`, `counts`, `duplicates`, `split`) and the
report: read (sources; labels from sub-folders or `label_pattern`) -> decode with libsndfile
(broken, empty, non-audio, over-long, non-finite and all-silent files quarantined with a reason;
heavy clipping flagged) -> mono mixdown -> resampling (soxr HQ) to one rate -> trim -> loudness ->
fixed length -> exact and near duplicates (dropped, held-out copies kept first, or reported) ->
splits (the source's, stratified, or grouped by a per-item field) -> write -> report.
The dataset directory appears all at once (an atomic rename), or not at all.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.audio.wav import write_wav
from genforge.core.atomic import atomic_dir, write_json
from genforge.core.config import save_json, to_dict
from genforge.core.errors import ConfigError, DataError
from genforge.core.lock import DirLock
from genforge.data.audio.canonical import AudioSplitData, write_audio_dataset
from genforge.data.audio.config import AudioIngestConfig
from genforge.data.audio.decode import DECODER, Decoded, Rejected, preview
from genforge.data.audio.duplicates import ClipDuplicates, clip_hashes, find_audio_duplicates, fingerprints
from genforge.data.audio.pattern import LABEL, LabelPattern
from genforge.data.audio.process import Processed, prepare, process_clips, steps
from genforge.data.audio.report import STATS_FILE, ReportFacts, write_audio_report
from genforge.data.audio.sources import RawAudio, base_name, open_audio_source
from genforge.data.audio.split import plan_splits
from genforge.data.audio.workers import BATCH, decoded
from genforge.data.process.config import CONFIG_FILE, PROCESS_LOG
from genforge.data.process.ingest import KEEP_RANK, IngestResult, class_names_for
from genforge.data.process.split import in_order, split_name

Progress = Callable[[int, int], None]  # (files read, files quarantined)
QUARANTINE_DIR = "quarantine"  # WAV previews of playable quarantined files, for the report
MAX_PREVIEWS = 40
SHOWN_PAIRS = 200  # near-duplicate pairs listed in the process log; the counts cover all


@dataclass
class Collected:
    """What the decode pass produced: one row per good clip, in source order."""

    origin: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    fields: list[dict[str, str]] = field(default_factory=list)
    clips: list[np.ndarray] = field(default_factory=list)  # mono float32 at the source rate
    rate: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    clipped: list[float] = field(default_factory=list)  # share of samples at |x| >= clip_level
    formats: Counter = field(default_factory=Counter)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    # (quarantine index, audio, rate) of playable quarantined files, for the report's players
    previews: list[tuple[int, np.ndarray, int]] = field(default_factory=list)
    read: int = 0

    def reject(
        self, raw: RawAudio, kind: str, reason: str, preview: np.ndarray | None = None, rate: int = 0
    ) -> None:
        if preview is not None and len(preview) and len(self.previews) < MAX_PREVIEWS:
            self.previews.append((len(self.quarantine), preview, rate))
        self.quarantine.append({"origin": raw.origin, "kind": kind, "reason": reason})

    def add(self, raw: RawAudio, got: Decoded | Rejected | None, pattern: LabelPattern | None) -> None:
        """`raw` and what decoding it gave (None: the source could not read it)."""
        self.read += 1
        if got is None:
            self.reject(raw, "unreadable", raw.error or "no data")
            return
        if isinstance(got, Rejected):
            self.reject(raw, got.kind, got.reason, got.preview, got.sample_rate)
            return
        label, fields = raw.label, dict(raw.fields)
        if pattern is not None:
            name = raw.name or base_name(raw.origin)
            values = pattern.match(name)
            if values is None:
                self.reject(
                    raw, "name_mismatch", pattern.mismatch(name), *preview(got.samples, got.sample_rate)
                )
                return
            label = values.pop(LABEL, label)
            fields.update(values)
        self._keep(raw, got, label, fields)

    def _keep(self, raw: RawAudio, got: Decoded, label: str | None, fields: dict[str, str]) -> None:
        samples = got.samples
        self.origin.append(raw.origin)
        self.split.append(split_name(raw.split, raw.origin))
        self.label.append(label)
        self.fields.append(fields)
        self.clips.append(samples)  # mixed down with the resampling, once the rate is known
        self.rate.append(got.sample_rate)
        self.channels.append(samples.shape[1])
        self.clipped.append(got.clipped)
        self.formats[got.format] += 1


def _collect(reader: Any, cfg: AudioIngestConfig, progress: Progress | None) -> Collected:
    got = Collected()
    pattern = LabelPattern(cfg.label_pattern) if cfg.label_pattern else None
    pending: deque[list[RawAudio]] = deque()

    def batches() -> Iterator[list[bytes | str | None]]:
        items = itertools.islice(reader, cfg.limit)
        while batch := list(itertools.islice(items, BATCH)):
            pending.append(batch)
            yield [raw.payload for raw in batch]

    for results in decoded(batches(), (cfg.max_seconds, cfg.silence_dbfs, cfg.clip_level), cfg.workers):
        for raw, result in zip(pending.popleft(), results, strict=True):
            got.add(raw, result, pattern)
        if progress is not None:
            progress(got.read, len(got.quarantine))
    if progress is not None:
        progress(got.read, len(got.quarantine))
    return got


def target_rate(cfg: AudioIngestConfig, rates: list[int]) -> int:
    """`sample_rate`, else the most common source rate (the higher of equally common ones)."""
    if cfg.sample_rate is not None:
        return cfg.sample_rate
    counts = Counter(rates)
    return max(counts, key=lambda r: (counts[r], r))


def _resampled(got: Collected, rate: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Mono clips at `rate`, and the mask of clips that keep any sample (a clip of a few samples
    can vanish when downsampled: quarantined as empty)."""
    clips = [prepare(c, r, rate) for c, r in zip(got.clips, got.rate, strict=True)]
    alive = np.array([len(c) > 0 for c in clips], bool)
    return clips, alive


def _field_ids(
    values: list[dict[str, str]], keep: np.ndarray
) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Per-item fields as (the names of each field's values among the kept clips, int64 ids per
    clip, -1 where a clip has none or is not kept)."""
    kept = [v for v, k in zip(values, keep, strict=True) if k]
    item_fields: dict[str, list[str]] = {}
    ids: dict[str, np.ndarray] = {}
    for name in sorted({k for v in kept for k in v}):
        item_fields[name] = class_names_for([v.get(name) for v in kept], None)  # numbers by value, then text
        index = {value: i for i, value in enumerate(item_fields[name])}
        ids[name] = np.array([index.get(v.get(name), -1) for v in values], np.int64)
    return item_fields, ids


def _drop_copies(
    dups: ClipDuplicates, origin: list[str], splits: list[str], hashes: list[str]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """keep-mask and records for policy `drop`: one clip per duplicate group survives, a
    held-out copy first (test, then val), so the held-out splits stay whole."""
    keep = np.ones(len(origin), bool)
    dropped = []
    cosine = {(i, j): c for i, j, c in dups.near_pairs}
    for group in dups.groups():
        first, *rest = sorted(group.tolist(), key=lambda i: (KEEP_RANK[splits[i]], i))
        for i in rest:
            keep[i] = False
            exact = hashes[i] == hashes[first]
            dropped.append(
                {
                    "origin": origin[i],
                    "split": splits[i],
                    "kind": "exact" if exact else "near",
                    "duplicate_of": origin[first],
                    "duplicate_of_split": splits[first],
                    **({} if exact else {"cosine": cosine.get((min(i, first), max(i, first)))}),
                }
            )
    return keep, dropped


def _dup_records(dups: ClipDuplicates, origin: list[str], splits: list[str]) -> dict[str, Any]:
    def member(i: int) -> dict[str, str]:
        return {"origin": origin[i], "split": splits[i]}

    return {
        "exact": [[member(i) for i in g] for g in dups.exact],
        "near_pairs": [
            {"a": member(i), "b": member(j), "cosine": c} for i, j, c in dups.near_pairs[:SHOWN_PAIRS]
        ],
    }


def _stats(
    got: Collected, at: np.ndarray, proc: Processed, idx: np.ndarray, rate: int
) -> dict[str, np.ndarray]:
    """Per-clip facts the report reads (the canonical files hold only the processed clips):
    clip idx[k] of the processed ones is clip at[k] of those collected."""
    return {
        "source_seconds": np.array([len(got.clips[i]) / got.rate[i] for i in at], np.float32),
        "source_rate": np.array([got.rate[i] for i in at], np.int32),
        "channels": np.array([got.channels[i] for i in at], np.int16),
        "clipped_share": np.array([got.clipped[i] for i in at], np.float32),
        "trimmed_seconds": (proc.trimmed[idx] / rate).astype(np.float32),
        "input_db": proc.input_db[idx],
        "gain_db": proc.gain_db[idx],
        "peak_limited": proc.peak_limited[idx],
        "lufs_fallback": proc.lufs_fallback[idx],
    }


def _save_stats(path: Path, per_split: dict[str, dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{s}/{k}": v for s, stats in per_split.items() for k, v in stats.items()})


def _describe(reader: Any, spec: str) -> dict[str, Any]:
    return {"spec": spec, **reader.describe()}


def _labels(
    got: Collected, live: np.ndarray, keep: np.ndarray, cfg: AudioIngestConfig, declared: Any
) -> tuple[list[str], np.ndarray, dict[str, list[str]], dict[str, np.ndarray]]:
    """(class names, label ids, per-item field value names, field ids) of the live clips; names
    come from the kept clips, so a value only a dropped copy had is gone with it."""
    if cfg.label_pattern is not None and LABEL in LabelPattern(cfg.label_pattern).fields:
        declared = None  # the pattern names the classes, not the source's folders
    text = [got.label[i] for i in live]
    class_names = class_names_for([t for t, k in zip(text, keep, strict=True) if k], declared)
    class_id = {name: k for k, name in enumerate(class_names)}
    labels = np.array([class_id.get(t, -1) for t in text], np.int64)  # -1: unlabelled (or dropped)
    item_fields, field_ids = _field_ids([got.fields[i] for i in live], keep)
    return class_names, labels, item_fields, field_ids


def _flagged(got: Collected, live: np.ndarray, kept: np.ndarray, cfg: AudioIngestConfig) -> list[dict]:
    """Kept clips with heavy clipping: reported, not dropped."""
    return [
        {
            "origin": got.origin[live[i]],
            "kind": "clipping",
            "reason": f"{got.clipped[live[i]]:.1%} of samples at full scale (|x| >= {cfg.clip_level:g})",
        }
        for i in kept
        if got.clipped[live[i]] >= cfg.clipping_share
    ]


def _counts(got: Collected, live: np.ndarray, clips: list[np.ndarray], proc: Processed, rate: int) -> dict:
    length = proc.audio.shape[1]
    return {
        "read": got.read,
        "resampled": int(sum(got.rate[i] != rate for i in live)),
        "multichannel": int(sum(got.channels[i] > 1 for i in live)),
        "trimmed_samples": int(sum(len(clips[i]) for i in live) - proc.trimmed.sum()),
        "padded": int((proc.trimmed < length).sum()),
        "cropped": int((proc.trimmed > length).sum()),
        "peak_limited": int(proc.peak_limited.sum()),
        "lufs_fallback": int(proc.lufs_fallback.sum()),
    }


def _write_previews(directory: Path, got: Collected) -> None:
    """WAV previews of playable quarantined files, named in their quarantine records."""
    for n, (q, audio, rate) in enumerate(got.previews):
        name = f"{QUARANTINE_DIR}/{n:04d}.wav"
        write_wav(directory / name, audio, rate)
        got.quarantine[q]["preview"] = name


def _nothing_usable(source: str, got: Collected, cfg: AudioIngestConfig) -> DataError:
    kinds = Counter(q["kind"] for q in got.quarantine)
    hint = (
        f"; {kinds['name_mismatch']} file name(s) do not match --label-pattern {cfg.label_pattern!r}"
        if kinds.get("name_mismatch")
        else ""
    )
    return DataError(
        f"no usable audio in {source}: read {got.read} file(s), quarantined {len(got.quarantine)} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) or 'none'}){hint}"
    )


def ingest(
    source: str,
    out: str | Path,
    config: AudioIngestConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Decode, validate, process, dedupe and split audio `source` into the dataset `out`."""
    cfg = config or AudioIngestConfig()
    fields = LabelPattern(cfg.label_pattern).item_fields if cfg.label_pattern else None
    if cfg.group_by and fields is not None and cfg.group_by not in fields:
        raise ConfigError(
            f"--group-by {cfg.group_by}: not a field of --label-pattern {cfg.label_pattern!r} "
            f"(fields: {', '.join(fields) or 'none'})"
        )
    reader = open_audio_source(source, cfg)
    with DirLock(out), atomic_dir(out, overwrite=overwrite) as tmp:
        got = _collect(reader, cfg, progress)
        description = _describe(reader, source)
        if not got.clips:
            raise _nothing_usable(source, got, cfg)
        rate = target_rate(cfg, got.rate)
        clips, alive = _resampled(got, rate)
        for i in np.flatnonzero(~alive):
            reason = f"{len(got.clips[i])} sample(s) at {got.rate[i]} Hz: none left at {rate} Hz"
            got.quarantine.append({"origin": got.origin[i], "kind": "empty", "reason": reason})
        live = np.flatnonzero(alive)
        if not len(live):
            raise _nothing_usable(source, got, cfg)
        # from here on, clip k is collected clip live[k]
        proc = process_clips([clips[i] for i in live], rate, cfg)
        origin = [got.origin[i] for i in live]
        source_splits = [got.split[i] for i in live]
        # hashlib releases the GIL over each clip's bytes, and the fingerprints' FFTs and array
        # passes mostly do too: the two run side by side (on FSDD the hashes cost about a third
        # of what the fingerprints do)
        with ThreadPoolExecutor(1) as pool:
            hashing = pool.submit(clip_hashes, proc.audio)
            features = fingerprints(proc.audio, rate)
            hashes = hashing.result()
        dups = find_audio_duplicates(hashes, features, cfg.near_dup_threshold)
        keep, dropped = (
            _drop_copies(dups, origin, source_splits, hashes)
            if cfg.dup_policy == "drop"
            else (np.ones(len(live), bool), [])
        )
        class_names, labels, item_fields, field_ids = _labels(
            got, live, keep, cfg, description.get("class_names")
        )
        kept = np.flatnonzero(keep)
        group = field_ids.get(cfg.group_by) if cfg.group_by else None
        plan = plan_splits(
            [source_splits[i] for i in kept],
            labels[kept],
            dups.component[kept],
            [hashes[i] for i in kept],
            cfg.seed,
            cfg.val_fraction,
            cfg.group_by,
            None if group is None else group[kept],
            item_fields.get(cfg.group_by) if cfg.group_by else None,
        )
        split_of = np.array(plan.splits)
        order = {s: kept[split_of == s] for s in in_order(set(plan.splits))}
        data = {
            s: AudioSplitData(
                proc.audio[idx],
                labels[idx],
                proc.lengths[idx],
                {name: ids[idx] for name, ids in field_ids.items()},
                [origin[i] for i in idx],
                [hashes[i] for i in idx],
            )
            for s, idx in order.items()
        }
        flagged = _flagged(got, live, kept, cfg)
        counts = {
            "read": got.read,
            "quarantined": len(got.quarantine),
            "clips": len(kept),
            "duplicates_dropped": len(dropped),
            "flagged_clipping": len(flagged),
            **_counts(got, live, clips, proc, rate),
            **{f"split_{s}": len(idx) for s, idx in order.items()},
        }
        meta = {
            "source": description,
            "process": {
                "decoder": DECODER,
                "sample_rate": rate,
                "formats": dict(got.formats),
                "steps": steps(cfg, rate, counts),
            },
            "config": to_dict(cfg),
            "counts": counts,
            "quarantined": len(got.quarantine),
            "duplicates": {
                "policy": cfg.dup_policy,
                "near_dup_threshold": cfg.near_dup_threshold,
                "fingerprint": "log-mel 32x32, energy-centred, cosine",
                "exact_groups": len(dups.exact),
                "near_groups": len(dups.near),
                "near_pair_count": len(dups.near_pairs),
                "dropped": len(dropped),
            },
            "split": {
                "method": plan.method,
                "val_fraction": plan.fraction,
                "seed": cfg.seed,
                "group_by": cfg.group_by,
                "groups": plan.groups,
            },
        }
        manifest = write_audio_dataset(
            tmp, data, sample_rate=rate, class_names=class_names or None, item_fields=item_fields, meta=meta
        )
        _save_stats(
            tmp / STATS_FILE, {s: _stats(got, live[idx], proc, idx, rate) for s, idx in order.items()}
        )
        save_json(cfg, tmp / CONFIG_FILE)
        _write_previews(tmp, got)
        write_json(
            tmp / PROCESS_LOG,
            {
                "quarantine": got.quarantine,
                "flagged": flagged,
                "dropped": dropped,
                "duplicates": _dup_records(dups, origin, source_splits),
                "notes": [{"origin": "", "note": n} for n in plan.notes],
            },
        )
        final = np.concatenate(list(order.values()))
        report = write_audio_report(tmp, ReportFacts(features[final], [hashes[i] for i in final]))
    return IngestResult(Path(out), manifest, report)
