"""Training runs: run directories, the run itself, its lineage, summary and sweep objective."""
