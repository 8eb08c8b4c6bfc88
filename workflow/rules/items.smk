# One rule per algorithm; they differ only in which items they match.


rule mcorr:
    input:
        item_input,
    output:
        f"{RESULTS}/{{item}}/manifest.json",
    log:
        f"{RESULTS}/{{item}}/job.log",
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "mcorr"),
    params:
        item=lambda wildcards: item_of(wildcards)["uuid"],
        algo=lambda wildcards: item_of(wildcards)["algo"],
        params=item_params,
        engine=config["engine"],
        batch=str(BATCH),
        raw_data=config.get("raw_data") or "",
    resources:
        mem_mb=item_resources("mem_mb"),
        runtime=item_resources("runtime"),
        cpus_per_task=item_resources("cpus_per_task"),
    threads: 1
    conda:
        "../envs/mesmerize.yaml"
    script:
        "../../scripts/run_item.py"


use rule mcorr as cnmf with:
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "cnmf"),


use rule mcorr as cnmfe with:
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "cnmfe"),
