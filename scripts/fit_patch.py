"""Snakemake `script:` entry point: fit one CNMF patch of a scattered item."""

from mesmerize_helpers.workflow_support import fit_patch_from_snakemake

fit_patch_from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
