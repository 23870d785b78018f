"""Pieces every stage shares: errors, registries, typed configs, atomic writes."""
