"""Feature extractors: a registry of networks mapping uint8 images to feature vectors.

Importing this package registers the built-in ones: classifier, contrastive, pixels, random,
torchscript.
"""

from genforge.evaluate.extractors import classifier, contrastive, pixels, torchscript  # noqa: F401
from genforge.evaluate.extractors.base import (  # noqa: F401
    EXTRACTORS,
    FeatureExtractor,
    Features,
    Preprocess,
    build_extractor,
    default_extractor,
)
