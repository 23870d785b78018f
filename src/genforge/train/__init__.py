"""The one trainer: phases, EMA, checkpoints, exact resume, divergence guard, DDP, logs."""
