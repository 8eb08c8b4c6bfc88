"""mesmerize-helpers: calcium-imaging batches (motion correction, CNMF, CNMF-E) as a
Snakemake workflow, with mesmerize-core's pandas accessors.

``from mesmerize_helpers import *`` gives what ``from mesmerize_core import *`` gives (the
batch functions and the accessor classes under mesmerize-core's names), plus the lazy movie
readers, the cnmf accessor's cache and the batch errors.
"""

__version__ = "0.1.0"

from . import accessors  # noqa: E402,F401 (registers df.caiman, s.mcorr, ...)
from .accessors.cnmf import CNMFExtensions  # noqa: E402
from .accessors.common import CaimanDataFrameExtensions, CaimanSeriesExtensions  # noqa: E402
from .accessors.mcorr import MCorrExtensions  # noqa: E402
from .accessors.paths import PathsDataFrameExtension, PathsSeriesExtension  # noqa: E402
from .batch import (  # noqa: E402
    COMPUTE_BACKEND_ASYNC,
    COMPUTE_BACKEND_LOCAL,
    COMPUTE_BACKEND_SLURM,
    COMPUTE_BACKEND_SUBPROCESS,
    COMPUTE_BACKENDS,
    create_batch,
    get_full_raw_data_path,
    get_parent_raw_data_path,
    load_batch,
    set_parent_raw_data_path,
)
from .cache import cnmf_cache  # noqa: E402
from .errors import (  # noqa: E402
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    DependencyError,
    ItemNotCurrentError,
    ItemRunningError,
    PreventOverwriteError,
    WrongAlgorithmExtensionError,
)
from .io.lazy import LazyArrayRCB, LazyArrayRCM, LazyArrayResiduals  # noqa: E402
from .io.lazy_files import LazyTiff, LazyVideo  # noqa: E402

__all__ = [
    # mesmerize-core's `from mesmerize_core import *`
    "set_parent_raw_data_path", "get_parent_raw_data_path", "load_batch", "create_batch",
    "CaimanDataFrameExtensions", "CaimanSeriesExtensions", "CNMFExtensions", "MCorrExtensions",
    # and more of mesmerize-core's public names
    "get_full_raw_data_path", "PathsDataFrameExtension", "PathsSeriesExtension", "cnmf_cache",
    "LazyArrayRCM", "LazyArrayRCB", "LazyArrayResiduals", "LazyTiff", "LazyVideo",
    "BatchItemNotRunError", "BatchItemUnsuccessfulError", "DependencyError",
    "PreventOverwriteError", "WrongAlgorithmExtensionError",
    # mesmerize-core's compute backends (batch_utils), all run with Snakemake here
    "COMPUTE_BACKENDS", "COMPUTE_BACKEND_SUBPROCESS", "COMPUTE_BACKEND_SLURM",
    "COMPUTE_BACKEND_LOCAL", "COMPUTE_BACKEND_ASYNC", "ItemNotCurrentError", "ItemRunningError",
]
