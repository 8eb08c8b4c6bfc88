# Per item, for `snakemake --report report.html`: a summary figure, whose caption links the
# item's interactive viewer page (made alongside). s.caiman.run() and `mesmerize-helpers run`
# make them right after the item; `snakemake` (rule all) makes any that are missing.
from mesmerize_helpers import plots


# a few seconds of plotting: not worth a cluster job and its queue wait
localrules:
    summary,
    summary_unreported,


report: "../report/workflow.rst"


# The report shows the figures that exist; an item that has not run has none yet, and
# flagging its future figure would make `snakemake --report` fail until every item ran.
rule summary:
    input:
        f"{RESULTS}/{{item}}/.done",
    output:
        figure=report(
            f"{RESULTS}/{{item}}/summary.png",
            caption="../report/summary.rst",
            category="Items",
            labels=lambda wildcards: ws.report_labels(item_of(wildcards)),
        ),
        viewer=f"{RESULTS}/{{item}}/viewer.html",
    log:
        f"{RESULTS}/{{item}}/summary.log",
    wildcard_constraints:
        item=ws.all_folders_pattern(plots.with_report_files(FOLDERS, True), RESULTS),
    params:
        item=lambda wildcards: item_of(wildcards)["uuid"],
    conda:
        "../envs/mesmerize.yaml"
    script:
        "../../scripts/plot_item.py"


use rule summary as summary_unreported with:
    output:
        figure=f"{RESULTS}/{{item}}/summary.png",
        viewer=f"{RESULTS}/{{item}}/viewer.html",
    wildcard_constraints:
        item=ws.all_folders_pattern(plots.with_report_files(FOLDERS, False), RESULTS),
