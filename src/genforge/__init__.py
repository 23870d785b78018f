"""genforge: from raw data to an evaluated, deployed generative model."""

__version__ = "0.1.0"
