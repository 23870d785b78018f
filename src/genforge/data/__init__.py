"""Data stage: collect (sources), process (validate, dedupe, split), canonical dataset, report."""
