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
    WrongAlgorithmExtensionError,
)

__all__ = [
    "BatchItemNotRunError", "BatchItemUnsuccessfulError", "DependencyError",
    "WrongAlgorithmExtensionError", "create_batch", "get_parent_raw_data_path", "load_batch",
    "set_parent_raw_data_path",
]
