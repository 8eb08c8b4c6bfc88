# A summary figure per finished item, collected by `snakemake --report report.html`.


# a few seconds of plotting: not worth a cluster job and its queue wait
localrules:
    summary,


rule summary:
    input:
        f"{RESULTS}/{{item}}/.done",
    output:
        report(
            f"{RESULTS}/{{item}}/summary.png",
            caption="../report/summary.rst",
            category="Items",
            labels=lambda wildcards: ws.report_labels(item_of(wildcards)),
        ),
    log:
        f"{RESULTS}/{{item}}/summary.log",
    wildcard_constraints:
        item=ws.all_folders_pattern(FOLDERS, RESULTS),
    params:
        item=lambda wildcards: item_of(wildcards)["uuid"],
    conda:
        "../envs/mesmerize.yaml"
    script:
        "../../scripts/plot_item.py"
