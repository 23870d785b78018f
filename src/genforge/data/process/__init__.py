"""Process: decode and validate raw items, resize, dedupe, check quality, split, write the dataset."""

from genforge.data.process.config import IngestConfig
from genforge.data.process.ingest import IngestResult, ingest

__all__ = ["IngestConfig", "IngestResult", "ingest"]
