"""pandas accessors: ``df.caiman``, ``df.paths``, ``s.caiman``, ``s.paths``, ``s.mcorr``, ``s.cnmf``."""

from . import cnmf, common, mcorr  # noqa: F401 (registers the accessors)
