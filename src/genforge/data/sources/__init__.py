"""Collect: one module per data source, each registered in `base.SOURCES`."""
