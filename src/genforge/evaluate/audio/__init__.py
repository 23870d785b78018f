"""Audio in the evaluate stage: the spoken-digit evaluator (`evaluator`, a log-mel CNN trained on
the dataset's train split, with `features` its input), `evaluate_audio` (registered in
`evaluate.evaluate.EVALUATIONS` under "audio"; per-task evaluations in `evaluation.AUDIO_TASKS`),
and the report sections of audio runs (`report`, registered in `evaluate.report.REPORT_SECTIONS`)."""

from __future__ import annotations

from genforge.evaluate.audio import report  # noqa: F401  (registers the report sections)
from genforge.evaluate.audio.evaluation import AUDIO_TASKS, evaluate_audio
from genforge.evaluate.audio.evaluator import AudioEvaluatorConfig, audio_evaluator, train_command
from genforge.evaluate.modalities import EVALUATOR_TRAINING

EVALUATOR_TRAINING.register("audio", train_command)

__all__ = ["AUDIO_TASKS", "AudioEvaluatorConfig", "audio_evaluator", "evaluate_audio"]
