"""mesmerize-core's ``run(backend="slurm", sbatch_opts="...")`` on Snakemake's SLURM executor.

mesmerize-core passes ``sbatch_opts`` to ``sbatch`` as they are. Snakemake's SLURM plugin
sets partition, account, memory, time, CPUs, ... itself and refuses them in
``slurm_extra``, so those options become the matching Snakemake resources of the item rules,
the options it manages alone (job name, log file, ``--wait``) are dropped with a warning,
and the rest go to ``slurm_extra``.
"""

from __future__ import annotations

import re
import shlex
import warnings

#: The rules whose jobs are batch items (or their patches).
ITEM_RULES = ("mcorr", "cnmf", "cnmfe", "cnmf_patch")
#: sbatch option -> Snakemake resource (value converted by :func:`_value`).
_RESOURCES = {
    "--partition": "slurm_partition", "-p": "slurm_partition",
    "--account": "slurm_account", "-A": "slurm_account",
    "--mem": "mem_mb", "--mem-per-cpu": "mem_mb_per_cpu",
    "--time": "runtime", "-t": "runtime",
    "--cpus-per-task": "cpus_per_task", "-c": "cpus_per_task",
    "--constraint": "constraint", "-C": "constraint",
    "--gres": "gres", "--gpus": "gpu", "-G": "gpu",
    "--nodes": "nodes", "-N": "nodes", "--ntasks": "tasks", "-n": "tasks",
}
#: sbatch option -> the SLURM executor's own setting (a snakemake command-line option).
_EXECUTOR = {"--qos": "--slurm-qos", "-q": "--slurm-qos", "--reservation": "--slurm-reservation"}
#: Options the SLURM plugin manages itself; mesmerize-core's defaults include some of them.
_MANAGED = {"--job-name", "-J", "--output", "-o", "--error", "-e", "--export", "--comment",
            "--workdir", "-D"}
_MANAGED_FLAGS = {"--wait", "-W", "--parsable"}
_WITH_VALUE = set(_RESOURCES) | set(_EXECUTOR) | _MANAGED
_UNITS_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _megabytes(value: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", value.strip().upper())
    if match is None:
        raise ValueError(f"sbatch --mem {value!r}: expected a size like 16000, 16G or 500M.")
    return max(1, round(float(match.group(1)) * _UNITS_MB[match.group(2) or "M"]))


def _minutes(value: str) -> int:
    """SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> minutes (rounded up)."""
    days, _, clock = value.rpartition("-") if "-" in value else ("0", "", value)
    parts = [int(p) for p in clock.split(":")]
    if "-" in value:
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        h, m, s = parts
    else:
        h, (m, s) = 0, (parts + [0])[:2]
    seconds = ((int(days) * 24 + h) * 60 + m) * 60 + s
    return max(1, -(-seconds // 60))


def _value(resource: str, value: str) -> str:
    """A resource value as ``--set-resources`` parses it (numbers bare, strings quoted)."""
    if resource == "mem_mb" or resource == "mem_mb_per_cpu":
        return str(_megabytes(value))
    if resource == "runtime":
        return str(_minutes(value))
    if resource in ("cpus_per_task", "nodes", "tasks"):
        return str(int(value))
    return repr(value)


def _options(sbatch_opts: str) -> list[tuple[str, str | None]]:
    """``"--mem=16G -p debug --exclusive"`` -> [("--mem", "16G"), ("-p", "debug"),
    ("--exclusive", None)]."""
    words, pairs, i = shlex.split(sbatch_opts), [], 0
    while i < len(words):
        word, i = words[i], i + 1
        if word.startswith("--") and "=" in word:
            name, value = word.split("=", 1)
            pairs.append((name, value))
        elif word in _WITH_VALUE and i < len(words):
            pairs.append((word, words[i]))
            i += 1
        elif not word.startswith("--") and len(word) > 2 and word[:2] in _WITH_VALUE:
            pairs.append((word[:2], word[2:]))  # -pdebug
        else:
            pairs.append((word, None))
    return pairs


def snakemake_args(sbatch_opts: str) -> list[str]:
    """Snakemake command-line arguments that apply mesmerize-core ``sbatch_opts`` to every
    item job (``--set-resources`` of the item rules, ``--slurm-qos``, ...)."""
    resources, extra, dropped, args = [], [], [], []
    for name, value in _options(sbatch_opts or ""):
        if name in _MANAGED or name in _MANAGED_FLAGS:
            dropped.append(name)
        elif name in _RESOURCES and value is not None:
            resources.append(f"{_RESOURCES[name]}={_value(_RESOURCES[name], value)}")
        elif name in _EXECUTOR and value is not None:
            args += [_EXECUTOR[name], value]
        else:
            extra.append(name if value is None else f"{name}={value}")
    if dropped:
        warnings.warn(f"sbatch_opts {', '.join(dropped)}: set by Snakemake's SLURM executor "
                      "for every job; ignored.", UserWarning, stacklevel=3)
    if extra:
        resources.append(f"slurm_extra={' '.join(extra)!r}")
    for resource in resources:
        args += ["--set-resources", *(f"{rule}:{resource}" for rule in ITEM_RULES)]
    return args
