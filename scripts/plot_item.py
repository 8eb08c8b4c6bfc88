"""Snakemake `script:` entry point: the summary figure and viewer page of one finished item."""

from mesmerize_helpers.plots import report_from_snakemake

report_from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
