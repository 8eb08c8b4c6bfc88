# Motion correction items. The cnmf rules (cnmf.smk) reuse this rule: items differ only in
# their algorithm, which run_item dispatches on.


rule mcorr:
    input:
        movie=item_input,
        ain=item_ain,
        patches=item_patches,
        rerun=item_rerun,
    output:
        f"{RESULTS}/{{item}}/.done",
    log:
        f"{RESULTS}/{{item}}/job.log",
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "mcorr"),
    params:
        item=lambda wildcards: item_of(wildcards)["uuid"],
        algo=lambda wildcards: item_of(wildcards)["algo"],
        params=item_params,
        input=lambda wildcards: item_of(wildcards)["input_movie_path"],
        engine=config["engine"],
    resources:
        mem_mb=item_resources("mem_mb"),
        runtime=item_resources("runtime"),
        cpus_per_task=item_resources("cpus_per_task"),
    threads: 1
    conda:
        "../envs/mesmerize.yaml"
    script:
        "../../scripts/run_item.py"
