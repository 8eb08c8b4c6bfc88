# Source extraction items: the mcorr rule with other items; each reads its parent's
# registered movie or a raw movie, and writes estimates (HDF5) into its own folder.
# With params["scatter_patches"], each rf/stride patch is fitted by its own job (scatter),
# and the item's job merges the patches and refits the whole field (gather).


rule cnmf_patch:
    input:
        movie=item_input,
    output:
        f"{RESULTS}/{{item}}/patches/{{patch}}.npz",
    log:
        f"{RESULTS}/{{item}}/patches/{{patch}}.log",
    wildcard_constraints:
        item=ws.scatter_pattern(ITEMS, FOLDERS, RESULTS),
        patch=r"\d+",
    params:
        params=item_params,
    resources:
        mem_mb=item_resources("mem_mb"),
        runtime=item_resources("runtime"),
    threads: 1
    conda:
        "../envs/mesmerize.yaml"
    script:
        "../../scripts/fit_patch.py"


use rule mcorr as cnmf with:
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "cnmf"),


use rule mcorr as cnmfe with:
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "cnmfe"),
