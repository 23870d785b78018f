"""Privacy evaluations: what synthetic data is worth (TSTR beside TRTR, `utility`) and what a
trained generator leaks about its training records (membership-inference audit, `membership`).

Kept import-light (`config` is read by scenario files); the evaluations import torch when used.
"""
