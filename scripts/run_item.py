"""Snakemake `script:` entry point: run one batch item (all logic in mesmerize_helpers.jobs)."""

import sys

from mesmerize_helpers.workflow_support import run_from_snakemake

sys.exit(run_from_snakemake(snakemake))  # noqa: F821 (injected by Snakemake)
