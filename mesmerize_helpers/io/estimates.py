"""Saving and loading CNMF estimates as HDF5, in the layout of CaImAn's ``CNMF.save``.

Layout (what CaImAn's ``load_CNMF`` and roiextractors' ``CaimanSegmentationExtractor``
read; the names and dtypes of CaImAn 1.12's own files)::

    /dims                       (2,) int64 frame size (y, x)
    /dview, /remove_very_bad_comps, /skip_refinement     CNMF's other attributes
    /estimates/A/{data,indices,indptr,shape}   footprints, CSC sparse (pixels, K):
                                float32 data, int32 indices and indptr, int64 shape
    /estimates/{C,f,b,S,YrA,R,sn}              float32; pixels in Fortran order on dims
    /estimates/{g,bl,c1,neurons_sn,SNR_comp,r_values,cnn_preds,center}   float64
    /estimates/{idx_components,idx_components_bad,dims}                  int64
    /estimates/F_dff            dF/F once computed, else "NoneType"
    /estimates/Cn               the correlation image (y, x) (see store_correlation_image)
    /params/<group>/<key>       every group of CaImAn's CNMFParams: its defaults, the
                                engine's, then the item's values (data/dims, data/fr,
                                data/decay_time, quality/min_SNR, ...)

``None`` is stored as the string dataset ``"NoneType"`` and strings as attributes, as CaImAn
does. The root attribute ``mesmerize_helpers_params`` holds the item's params as JSON too.

CNMF-E's ring-model background goes where CaImAn puts it, ``/estimates/W`` (CSC sparse) and
``/estimates/b0``; its settings (``ssub_B``, ``nb``, ``ring_radius``) in the root attribute
``mesmerize_helpers_ring`` (JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp

__all__ = ["CNMF", "CNMFParams", "load_cnmf", "load_estimates", "save_estimates",
           "store_correlation_image"]

_ARRAYS = ("b", "C", "f", "S", "YrA", "R", "sn", "g", "bl", "c1", "neurons_sn",
           "idx_components", "idx_components_bad", "SNR_comp", "r_values", "cnn_preds", "F_dff",
           "seed_index")

#: The dtypes CaImAn's own files have (its float32 movie arithmetic, float64 per-component
#: results, int64 indices); arrays not named here are saved as they are.
_DTYPES = {
    **dict.fromkeys(("b", "C", "f", "S", "YrA", "R", "sn", "b0"), np.float32),
    **dict.fromkeys(("g", "bl", "c1", "neurons_sn", "SNR_comp", "r_values", "cnn_preds",
                     "center"), np.float64),
    **dict.fromkeys(("idx_components", "idx_components_bad", "dims"), np.int64),
}

_RING_SETTINGS = ("ssub_B", "nb", "ring_radius")
#: Root attribute holding the item's params as JSON.
PARAMS_ATTR = "mesmerize_helpers_params"


def _write(group: h5py.Group, key: str, value: Any) -> None:
    """Write one value the way CaImAn's ``recursively_save_dict_contents_to_group`` does."""
    if value is None:
        group[key] = "NoneType"
    elif isinstance(value, (str, os.PathLike)):
        group.attrs[key] = os.fspath(value)
    elif sp.issparse(value):
        m = sp.csc_matrix(value)
        sub = group.create_group(key)
        sub["data"] = m.data.astype(np.float32, copy=False)
        sub["indices"] = m.indices.astype(np.int32, copy=False)
        sub["indptr"] = m.indptr.astype(np.int32, copy=False)
        sub["shape"] = np.array(m.shape, np.int64)
    elif isinstance(value, Mapping):
        sub = group.create_group(key)
        for k, v in value.items():
            _write(sub, str(k), v)
    elif isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (str, os.PathLike)) for v in value):
            group[key] = np.array([os.fspath(v) for v in value], dtype="S")
        elif any(v is None for v in value):
            return  # not representable; CaImAn does not save such values either
        else:
            _write_array(group, key, value)
    else:
        _write_array(group, key, value)


def _write_array(group: h5py.Group, key: str, value: Any) -> None:
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nested lists
        array = np.asarray(None)
    if array.dtype == object:  # nothing HDF5 stores as numbers: keep its text
        group.attrs[key] = str(value)
    else:
        group[key] = array if array.ndim else array[()]


def _typed(name: str, value: Any) -> Any:
    """``value`` in the dtype CaImAn's files have for ``name`` (None stays None)."""
    if value is None or name not in _DTYPES:
        return value
    return np.asarray(value, dtype=_DTYPES[name])


def _caiman_params(estimates: Any, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every group of CaImAn's params as the fit used them: CaImAn's defaults, the groups
    of the file the estimates were read from, the engine's resolved params
    (``extra["params"]`` of a fresh fit), then ``params``; ``data/dims`` the frame size."""
    groups = CNMFParams()
    groups.change_params(estimates.extra.get("caiman_params") or {})
    groups.change_params(estimates.extra.get("params") or {})
    groups.change_params(params)
    groups.data["dims"] = tuple(int(d) for d in estimates.dims)
    return groups.to_dict()


def _centers(A: sp.csc_matrix, dims: tuple[int, int]) -> np.ndarray:
    """Centre of mass (row, column) of each footprint, (K, 2): CaImAn's ``center``."""
    pixels = np.arange(A.shape[0])
    rows, cols = pixels % dims[0], pixels // dims[0]  # Fortran pixel order
    weight = np.asarray(A.sum(axis=0)).ravel()
    weight[weight == 0] = np.nan
    return np.stack([A.T @ rows / weight, A.T @ cols / weight], axis=1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def save_estimates(path: str | Path, estimates: Any, params: Mapping[str, Any] | None) -> Path:
    """Write estimates and params to an HDF5 file (overwritten if present), in CaImAn's
    layout (module docstring).

    Parameters
    ----------
    path
        Output file (``.hdf5``).
    estimates
        :class:`~mesmerize_helpers.engine.cnmf.Estimates`. An attribute ``Cn`` (the
        correlation image, (y, x)) is saved as CaImAn's ``estimates/Cn``.
    params
        Flat CaImAn params of the item (stored as they are in the JSON root attribute, and
        over the engine's resolved values in the ``/params`` groups).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    params = dict(params or {})
    dims = tuple(int(d) for d in estimates.dims)
    A = sp.csc_matrix(estimates.A)
    with h5py.File(path, "w") as fh:
        fh["dims"] = np.array(dims, np.int64)
        fh["dview"] = "NoneType"
        fh["remove_very_bad_comps"] = False
        fh["skip_refinement"] = False
        est = fh.create_group("estimates")
        _write(est, "A", A)
        _write(est, "dims", np.array(dims, np.int64))
        for name in _ARRAYS:
            _write(est, name, _typed(name, getattr(estimates, name, None)))
        _write(est, "center", _typed("center", _centers(A, dims)))
        Cn = getattr(estimates, "Cn", None)
        if Cn is not None:
            _write(est, "Cn", np.asarray(Cn))
        if "W" in estimates.extra:
            _write(est, "W", sp.csc_matrix(estimates.extra["W"]))
            _write(est, "b0", _typed("b0", estimates.extra["b0"]))
            ring = {k: _jsonable(estimates.extra[k]) for k in _RING_SETTINGS
                    if k in estimates.extra}
            fh.attrs["mesmerize_helpers_ring"] = json.dumps(ring)
        _write(fh, "params", _caiman_params(estimates, params))
        fh.attrs[PARAMS_ATTR] = json.dumps(
            {k: _jsonable(v) for k, v in params.items()}, default=str
        )
    return path


def store_correlation_image(folder: Path, outputs: Mapping[str, str], algo: str) -> None:
    """Add the item's correlation image to its estimates file as CaImAn's
    ``estimates/Cn`` (where CaImAn's ``fit_file`` and its readers keep it).

    It is the image ``s.caiman.get_corr_image()`` gives: the local correlation of the
    movie for cnmf, of the gSig-filtered movie (what CNMF-E seeds from) for cnmfe.

    Parameters
    ----------
    folder
        Where the step wrote its files (``outputs`` are relative to it).
    outputs
        The step's outputs: ``cnmf-hdf5-path`` and the summary images.
    algo
        ``"cnmf"`` or ``"cnmfe"``.
    """
    key = "corr-pnr-img-path" if algo == "cnmfe" else "corr-img-path"
    if "cnmf-hdf5-path" not in outputs or key not in outputs:
        return
    image = np.load(folder / outputs[key])
    with h5py.File(folder / outputs["cnmf-hdf5-path"], "r+") as fh:
        if "Cn" in fh["estimates"]:
            del fh["estimates/Cn"]
        fh["estimates/Cn"] = image


def _read(item: h5py.Dataset) -> Any:
    """A dataset's value as CaImAn's loader gives it (None, and bool for a stored bool)."""
    val = item[()]
    if isinstance(val, bytes) and val == b"NoneType" or isinstance(val, str) and val == "NoneType":
        return None
    if isinstance(val, np.bool_):
        return bool(val)
    return val


def _read_any(node: Any) -> Any:
    """A dataset's value, a CSC matrix from a sparse group, or a dict from another group
    (strings are the group's attributes, as CaImAn stores them)."""
    if isinstance(node, h5py.Dataset):
        return _read(node)
    if {"data", "indices", "indptr", "shape"} <= set(node):
        shape = tuple(int(s) for s in node["shape"][()])
        return sp.csc_matrix((node["data"][()], node["indices"][()], node["indptr"][()]),
                             shape=shape)
    out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in node.attrs.items()}
    out.update({k: _read_any(v) for k, v in node.items()})
    return out


def _dims(fh: h5py.File) -> tuple[int, int]:
    for node in (fh["estimates"].get("dims"), fh.get("dims")):
        value = None if node is None else _read(node)
        if value is not None and np.size(value) >= 2:
            return tuple(int(s) for s in np.ravel(value)[:2])
    raise ValueError(f"{fh.filename}: no frame size (dims) in /estimates/dims or /dims.")


def _numbers(value: Any) -> Any:
    """Per-component values CaImAn saved as text (``|S32``: its fallback when a list mixes
    number types, e.g. ``bl`` of CNMF-E) as float64; NaN where one is not a number."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "SU":
        return value
    out = np.full(value.shape, np.nan)
    for index, text in np.ndenumerate(value):
        try:
            out[index] = float(text)
        except ValueError:
            pass
    return out


def _is_none(node: Any) -> bool:
    return isinstance(node, h5py.Dataset) and node.shape == () and _read(node) is None


def _caiman_ring(groups: Mapping[str, Any]) -> dict[str, Any]:
    """CNMF-E ring settings of a CaImAn file, from its params (as CaImAn fits them)."""
    from ..engine.ring import ring_radius

    init = groups.get("init") or {}
    try:
        gsiz = init["gSiz"]
        return {"ssub_B": int(init.get("ssub_B", 2)), "nb": int(init.get("nb", 0)),
                "ring_radius": ring_radius(float(init.get("ring_size_factor", 1.5)), gsiz)}
    except (KeyError, TypeError, ValueError):
        return {}


def load_estimates(path: str | Path) -> Any:
    """Read estimates written by :func:`save_estimates` or by CaImAn's ``CNMF.save`` (e.g. a
    mesmerize-core batch's ``<uuid>.hdf5``).

    Returns
    -------
    Estimates
        With ``extra["params"]`` holding the item's params (flat dict) when the file has
        them, ``extra["caiman_params"]`` the file's CaImAn groups (nested). Arrays of the
        file that ``Estimates`` has no field for (``Cn``, ``center``, ...) are set as
        attributes of the same name. A CNMF-E ring model (``W``, ``b0``) goes into
        ``extra`` with its settings (ours, or for a CaImAn file those of its params).
    """
    from ..engine.cnmf import Estimates

    with h5py.File(Path(path), "r") as fh:
        grp = fh["estimates"]
        A = sp.csc_matrix(_read_any(grp["A"]))
        vals = {name: _numbers(_read(grp[name])) for name in _ARRAYS if name in grp}
        dims = _dims(fh)
        params: dict[str, Any] = {}
        if PARAMS_ATTR in fh.attrs:
            params = json.loads(fh.attrs[PARAMS_ATTR])
        groups = _read_any(fh["params"]) if "params" in fh else {}
        groups = {g: v for g, v in groups.items() if isinstance(v, dict)}
        ring: dict[str, Any] = {}
        if "W" in grp and isinstance(grp["W"], h5py.Group):  # a CNMF-E ring model
            ring = (json.loads(fh.attrs["mesmerize_helpers_ring"])
                    if "mesmerize_helpers_ring" in fh.attrs else _caiman_ring(groups))
            if ring:
                ring["W"] = sp.csc_matrix(_read_any(grp["W"]))
                ring["b0"] = np.asarray(grp["b0"][()], np.float32).ravel()
        known = {"A", "dims", *_ARRAYS, *(("W", "b0") if ring else ())}
        others = {k: _read_any(v) for k, v in grp.items()
                  if k not in known and not _is_none(v)
                  and (isinstance(v, h5py.Dataset) or k == "W")}
    K = A.shape[1]
    T = np.shape(vals["C"])[1] if vals.get("C") is not None else 0

    def need(name: str, shape: tuple[int, ...]) -> np.ndarray:
        v = vals.get(name)
        return np.zeros(shape, np.float32) if v is None else np.asarray(v)

    est = Estimates(
        A=A, b=need("b", (A.shape[0], 0)), C=need("C", (K, T)), f=need("f", (0, T)),
        S=need("S", (K, T)), YrA=need("YrA", (K, T)), sn=need("sn", (A.shape[0],)),
        g=need("g", (K, 0)), bl=need("bl", (K,)), c1=need("c1", (K,)),
        neurons_sn=need("neurons_sn", (K,)), dims=dims, R=vals.get("R"),
        idx_components=vals.get("idx_components"),
        idx_components_bad=vals.get("idx_components_bad"),
        SNR_comp=vals.get("SNR_comp"), r_values=vals.get("r_values"),
        cnn_preds=vals.get("cnn_preds"), F_dff=vals.get("F_dff"),
        seed_index=vals.get("seed_index"),
    )
    est.extra["params"] = params
    est.extra["caiman_params"] = groups
    est.extra.update(ring)
    for name, value in others.items():
        if not hasattr(type(est), name):  # never shadow a method or property
            setattr(est, name, value)
    return est


# --- what s.cnmf.get_output() returns ----------------------------------------------------

class CNMFParams:
    """CaImAn's parameter groups of a fit, as attributes holding dicts.

    ``params.quality["min_SNR"]``, ``params.get_group("init")``, ``params.get("data",
    "dims")``, ``params.data["dims"]``: the groups of CaImAn's ``CNMFParams``, with its
    defaults where the item did not set a value.

    Parameters
    ----------
    values
        Flat CaImAn params (each key is set in every group that has it, as CaImAn does for
        flat keys) or nested by group.
    """

    def __init__(self, values: Mapping[str, Any] | None = None):
        import copy

        from ..engine.params import CAIMAN_DEFAULTS

        for group, defaults in CAIMAN_DEFAULTS.items():
            setattr(self, group, copy.deepcopy(defaults))
        self.change_params(dict(values or {}))

    @property
    def groups(self) -> tuple[str, ...]:
        """The group names, in CaImAn's order."""
        from ..engine.params import CAIMAN_DEFAULTS

        return tuple(CAIMAN_DEFAULTS)

    def get_group(self, group: str) -> dict[str, Any]:
        """The dict of one group (the object itself: changes to it stay)."""
        if group not in self.groups:
            raise KeyError(f"No group in CNMFParams named {group}; groups are {self.groups}.")
        return getattr(self, group)

    def get(self, group: str, key: str) -> Any:
        """One value; KeyError for an unknown group or key."""
        values = self.get_group(group)
        if key not in values:
            raise KeyError(f"No key {key} in group {group}")
        return values[key]

    def set(self, group: str, val_dict: Mapping[str, Any]) -> None:
        """Set keys of one group (keys the group does not have are ignored, as CaImAn)."""
        values = self.get_group(group)
        values.update({k: v for k, v in val_dict.items() if k in values})

    def change_params(self, params_dict: Mapping[str, Any]) -> None:
        """Set values from a flat or nested (by group) dict."""
        for key, value in params_dict.items():
            if key in self.groups and isinstance(value, Mapping):
                self.set(key, value)
                continue
            for group in self.groups:
                if key in getattr(self, group):
                    getattr(self, group)[key] = value

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every group as ``{group: {key: value}}``."""
        return {group: getattr(self, group) for group in self.groups}

    def __repr__(self) -> str:
        return "CNMFParams(" + ", ".join(f"{g}: {len(getattr(self, g))} keys"
                                         for g in self.groups) + ")"


class CNMF:
    """A fitted CNMF / CNMF-E item, shaped like CaImAn's ``CNMF`` object.

    Attributes
    ----------
    estimates
        :class:`~mesmerize_helpers.engine.cnmf.Estimates`, with CaImAn's attribute names:
        ``A`` (sparse (pixels, K), Fortran pixel order on ``dims``), ``b``, ``C``, ``f``,
        ``S``, ``YrA``, ``R``, ``sn``, ``g``, ``bl``, ``c1``, ``neurons_sn``, ``dims``,
        ``idx_components``, ``idx_components_bad``, ``SNR_comp``, ``r_values``,
        ``cnn_preds``, ``F_dff``.
    params
        :class:`CNMFParams`: CaImAn's groups, ``params.quality["min_SNR"]``.
    dims
        (y, x) frame size.
    path
        The HDF5 file it was read from.

    Attributes not found here are looked up on ``estimates``, so ``cnmf.A`` is
    ``cnmf.estimates.A``. :meth:`to_caiman` gives CaImAn's own object when CaImAn is installed.
    """

    def __init__(self, estimates: Any, params: CNMFParams, path: str | Path | None = None):
        self.estimates = estimates
        self.params = params
        self.dims = tuple(estimates.dims)
        self.path = None if path is None else Path(path)

    def __getattr__(self, name: str) -> Any:
        # only for names not found normally; never for dunders (copy, pickle) or estimates
        if name.startswith("__") or name == "estimates":
            raise AttributeError(name)
        try:
            return getattr(self.estimates, name)
        except AttributeError:
            raise AttributeError(f"'CNMF' object (and its estimates) has no attribute "
                                 f"{name!r}") from None

    def to_caiman(self) -> Any:
        """CaImAn's ``CNMF`` object for the same file (``load_CNMF``); needs CaImAn."""
        try:
            from caiman.source_extraction.cnmf.cnmf import load_CNMF
        except ImportError as err:
            raise ImportError("to_caiman() needs CaImAn (conda install -c conda-forge "
                              "caiman); it is not on PyPI.") from err
        if self.path is None:
            raise ValueError("This CNMF object was not read from a file.")
        return load_CNMF(str(self.path))

    def cache_nbytes(self) -> int:
        """Memory held by the arrays (for the cache's size limit)."""
        from ..cache import nbytes

        return nbytes(vars(self.estimates))

    def __repr__(self) -> str:
        return (f"CNMF({self.estimates.A.shape[1]} components, dims={self.dims}, "
                f"{np.shape(self.estimates.C)[1]} frames, from {self.path})")


def load_cnmf(path: str | Path) -> CNMF:
    """An estimates file (ours or CaImAn's ``CNMF.save``) as a :class:`CNMF` object."""
    path = Path(path).resolve()  # CaImAn's load_CNMF (to_caiman) relocates bare names
    estimates = load_estimates(path)
    params = CNMFParams({**estimates.extra["caiman_params"], **estimates.extra["params"]})
    params.data["dims"] = tuple(estimates.dims)
    return CNMF(estimates, params, path)
