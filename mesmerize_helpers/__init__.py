"""mesmerize-helpers: calcium-imaging batches (motion correction, CNMF, CNMF-E) as a
Snakemake workflow, with mesmerize-core's pandas accessors."""

__version__ = "0.1.0"

from . import accessors  # noqa: E402,F401 (registers df.caiman, s.mcorr, ...)
from .batch import (  # noqa: E402
    create_batch,
    get_parent_raw_data_path,
    load_batch,
    set_parent_raw_data_path,
)
from .errors import (  # noqa: E402
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    DependencyError,
    ItemNotCurrentError,
    WrongAlgorithmExtensionError,
)
from .runner import (  # noqa: E402
    COMPUTE_BACKEND_ASYNC,
    COMPUTE_BACKEND_LOCAL,
    COMPUTE_BACKEND_SLURM,
    COMPUTE_BACKEND_SUBPROCESS,
    COMPUTE_BACKENDS,
)

__all__ = [
    "BatchItemNotRunError", "BatchItemUnsuccessfulError", "COMPUTE_BACKENDS",
    "COMPUTE_BACKEND_ASYNC", "COMPUTE_BACKEND_LOCAL", "COMPUTE_BACKEND_SLURM",
    "COMPUTE_BACKEND_SUBPROCESS", "DependencyError", "ItemNotCurrentError",
    "WrongAlgorithmExtensionError", "create_batch", "get_parent_raw_data_path", "load_batch",
    "set_parent_raw_data_path",
]
