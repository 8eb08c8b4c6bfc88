# Reads and validates the batch, and maps each item to its output folder and input.
import json

import pandas as pd

from mesmerize_helpers import workflow_support as ws

BATCH = Path(config["batch"]).resolve()
RESULTS = ws.results_root(BATCH, config.get("results"))
RAW_DATA = ws.raw_data_dir(config.get("raw_data"), BATCH)
ITEMS = ws.load_items(BATCH)
validate(pd.DataFrame(ITEMS, columns=ws.TSV_COLUMNS), "../schemas/batch.schema.yaml")
FOLDERS = ws.item_folders(ITEMS, RESULTS)
# done / outdated / stale / FAILED / not run, from the manifests: items not done re-run
STATES = ws.item_states(ITEMS, FOLDERS, BATCH, RAW_DATA)
ws.adopt_finished(ITEMS, FOLDERS, STATES)


def all_done():
    return [ws.done_path(FOLDERS[item["uuid"]]) for item in ITEMS]


def all_summaries():
    return [str(FOLDERS[item["uuid"]] / "summary.png") for item in ITEMS]


def item_of(wildcards):
    return ws.item_by_folder(ITEMS, FOLDERS, RESULTS, wildcards.item)


def item_input(wildcards):
    """A raw movie (none if it is missing: the job reports it), or the parent item's
    done-marker (so the parent runs first)."""
    return ws.item_input(item_of(wildcards), FOLDERS, BATCH, RAW_DATA)


def item_ain(wildcards):
    """Seed masks of a seeded CNMF item (params["Ain"]), as a dependency; else nothing."""
    return ws.item_ain(item_of(wildcards), BATCH, RAW_DATA)


def item_patches(wildcards):
    """Patch fits of an item whose patches run as separate jobs (params["scatter_patches"])."""
    return ws.item_patch_files(item_of(wildcards), ITEMS, FOLDERS, BATCH, RAW_DATA)


def item_rerun(wildcards):
    """A trigger file newer than the item's output when our files say its results are not
    current (made here, at parse time), so that Snakemake re-runs it."""
    return ws.item_rerun(item_of(wildcards), FOLDERS, STATES)


def item_params(wildcards):
    # what the job runs (job resources excluded: they do not change results)
    return json.dumps(ws.run_params(item_of(wildcards)["params"]), sort_keys=True)


def item_resources(name):
    def resource(wildcards, input, attempt):
        return ws.resources(item_of(wildcards), input.movie, name, config, attempt)

    return resource
