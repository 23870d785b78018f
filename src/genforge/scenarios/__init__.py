"""Scenarios: named recipes (YAML) that choose data, augmentation, model, budget, gates and export,
and the runner that chains every stage on one of them (`genforge run`)."""
