# Reads and validates the batch, and maps each item to its output folder and input.
import json

import pandas as pd

from mesmerize_helpers import workflow_support as ws

BATCH = Path(config["batch"]).resolve()
RESULTS = ws.results_root(BATCH, config.get("results"))
ITEMS = ws.load_items(BATCH)
validate(pd.DataFrame(ITEMS, columns=ws.TSV_COLUMNS), "../schemas/batch.schema.yaml")
FOLDERS = ws.item_folders(ITEMS, RESULTS)


def all_manifests():
    return [ws.manifest_path(FOLDERS[item["uuid"]]) for item in ITEMS]


def all_summaries():
    return [str(FOLDERS[item["uuid"]] / "summary.png") for item in ITEMS]


def item_of(wildcards):
    return ws.item_by_folder(ITEMS, FOLDERS, RESULTS, wildcards.item)


def item_input(wildcards):
    """A raw movie, or the parent item's manifest (so the parent runs first)."""
    return ws.item_input(item_of(wildcards), FOLDERS, BATCH, config.get("raw_data"))


def item_ain(wildcards):
    """Seed masks of a seeded CNMF item (params["Ain"]), as a dependency; else nothing."""
    return ws.item_ain(item_of(wildcards), BATCH, config.get("raw_data"))


def item_patches(wildcards):
    """Patch fits of an item whose patches run as separate jobs (params["scatter_patches"])."""
    return ws.item_patch_files(item_of(wildcards), ITEMS, FOLDERS, BATCH, config.get("raw_data"))


def item_params(wildcards):
    # a JSON string: Snakemake re-runs the item (and its children) when it changes
    return json.dumps(item_of(wildcards)["params"], sort_keys=True)


def item_resources(name):
    def resource(wildcards, input, attempt):
        return ws.resources(item_of(wildcards), input.movie, name, config, attempt)

    return resource
