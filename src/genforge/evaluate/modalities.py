"""Importing this registers the evaluations of the shipped modalities beyond images.

`EVALUATOR_TRAINING`: modality -> fn(dataset, seed=, epochs=, retrain=) -> the lines `genforge
evaluator train` prints, for modalities whose evaluator is their own (audio's log-mel CNN);
defined before the imports below, which register into it."""

from __future__ import annotations

from genforge.core.modality import modality_registry

EVALUATOR_TRAINING = modality_registry("evaluator training")

import genforge.evaluate.audio  # noqa: E402,F401  (registers the "audio" evaluation, report sections, evaluator)
import genforge.evaluate.text  # noqa: E402,F401  (registers the "text" evaluation and report sections)
