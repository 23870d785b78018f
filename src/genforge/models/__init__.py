"""Train-stage networks and objectives, one module per family, registered in `registry.MODELS`."""
