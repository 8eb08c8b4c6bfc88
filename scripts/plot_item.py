"""Snakemake `script:` entry point: the summary figure of one finished item."""

from mesmerize_helpers.workflow_support import plot_from_snakemake

plot_from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
