"""Saving and loading CNMF estimates as HDF5, in the layout of CaImAn's ``CNMF.save``.

Layout (what ``caiman.source_extraction.cnmf.cnmf.load_CNMF`` reads)::

    /dims                       (2,) frame size (y, x)
    /estimates/A/{data,indices,indptr,shape}   footprints, CSC sparse (pixels, K)
    /estimates/{b,C,f,S,YrA,R,sn,g,bl,c1,neurons_sn,dims,idx_components,...}
    /params/<group>/<key>       CaImAn params by group (data, init, temporal, ...)

``None`` is stored as the string dataset ``"NoneType"`` and strings as attributes, as CaImAn
does. The root attribute ``mesmerize_helpers_params`` holds the params as JSON too.

CNMF-E's ring-model background goes where CaImAn puts it, ``/estimates/W`` (CSC sparse) and
``/estimates/b0``; its settings (``ssub_B``, ``nb``, ``ring_radius``) in the root attribute
``mesmerize_helpers_ring`` (JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp

__all__ = ["CNMF", "CNMFParams", "load_cnmf", "load_estimates", "save_estimates"]

_ARRAYS = ("b", "C", "f", "S", "YrA", "R", "sn", "g", "bl", "c1", "neurons_sn",
           "idx_components", "idx_components_bad", "SNR_comp", "r_values", "cnn_preds", "F_dff",
           "seed_index")


_RING_SETTINGS = ("ssub_B", "nb", "ring_radius")


def _write(group: h5py.Group, key: str, value: Any) -> None:
    """Write one value the way CaImAn's ``recursively_save_dict_contents_to_group`` does."""
    if value is None:
        group[key] = "NoneType"
    elif isinstance(value, str):
        group.attrs[key] = value
    elif sp.issparse(value):
        m = sp.csc_matrix(value)
        sub = group.create_group(key)
        sub["data"], sub["indices"] = m.data, m.indices
        sub["indptr"], sub["shape"] = m.indptr, np.array(m.shape)
    elif isinstance(value, Mapping):
        sub = group.create_group(key)
        for k, v in value.items():
            _write(sub, str(k), v)
    elif isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            group[key] = np.array(value, dtype="S")
        elif any(v is None for v in value):
            return  # not representable; CaImAn does not save such values either
        else:
            group[key] = np.asarray(value)
    else:
        group[key] = np.asarray(value) if not np.isscalar(value) else value


def _params_by_group(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat params into CaImAn's groups (a key of several groups goes into each)."""
    from ..engine.params import CAIMAN_PARAM_GROUPS

    out: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        for group, keys in CAIMAN_PARAM_GROUPS.items():
            if key in keys:
                out.setdefault(group, {})[key] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def save_estimates(path: str | Path, estimates: Any, params: Mapping[str, Any] | None) -> Path:
    """Write estimates and params to an HDF5 file (overwritten if present).

    Parameters
    ----------
    path
        Output file (``.hdf5``).
    estimates
        :class:`~mesmerize_helpers.engine.cnmf.Estimates`.
    params
        Flat CaImAn params dict used for the fit (keys outside CaImAn's groups are kept only
        in the JSON root attribute).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    params = dict(params or {})
    with h5py.File(path, "w") as fh:
        fh["dims"] = np.array(estimates.dims)
        est = fh.create_group("estimates")
        _write(est, "A", sp.csc_matrix(estimates.A))
        _write(est, "dims", np.array(estimates.dims))
        for name in _ARRAYS:
            _write(est, name, getattr(estimates, name, None))
        if "W" in estimates.extra:
            _write(est, "W", sp.csc_matrix(estimates.extra["W"]))
            _write(est, "b0", np.asarray(estimates.extra["b0"]))
            ring = {k: _jsonable(estimates.extra[k]) for k in _RING_SETTINGS
                    if k in estimates.extra}
            fh.attrs["mesmerize_helpers_ring"] = json.dumps(ring)
        _write(fh, "params", _params_by_group(params))
        fh.attrs["mesmerize_helpers_params"] = json.dumps(
            {k: _jsonable(v) for k, v in params.items()}, default=str
        )
    return path


def _read(item: h5py.Dataset) -> Any:
    val = item[()]
    if isinstance(val, bytes) and val == b"NoneType" or isinstance(val, str) and val == "NoneType":
        return None
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


def load_estimates(path: str | Path) -> Any:
    """Read estimates written by :func:`save_estimates` or by CaImAn's ``CNMF.save`` (e.g. a
    mesmerize-core batch's ``<uuid>.hdf5``).

    Returns
    -------
    Estimates
        With ``extra["params"]`` holding the saved params (flat dict) when available. Arrays
        of a CaImAn file that ``Estimates`` has no field for (``W``, ``b0``, ``Cn``, ...) are
        set as attributes of the same name.
    """
    from ..engine.cnmf import Estimates

    with h5py.File(Path(path), "r") as fh:
        grp = fh["estimates"]
        A = sp.csc_matrix(_read_any(grp["A"]))
        vals = {name: _read(grp[name]) for name in _ARRAYS if name in grp}
        dims = _dims(fh)
        params: dict[str, Any] = {}
        if "mesmerize_helpers_params" in fh.attrs:
            params = json.loads(fh.attrs["mesmerize_helpers_params"])
        ring: dict[str, Any] = {}
        others: dict[str, Any] = {}
        if "W" in grp and "mesmerize_helpers_ring" in fh.attrs:  # our CNMF-E ring model
            ring["W"] = sp.csc_matrix(_read_any(grp["W"]))
            ring["b0"] = np.asarray(grp["b0"][()])
            ring.update(json.loads(fh.attrs["mesmerize_helpers_ring"]))
        else:
            known = {"A", "dims", *_ARRAYS}
            others = {k: _read_any(v) for k, v in grp.items()
                      if k not in known and not isinstance(v, h5py.Group)
                      or k in ("W", "b0")}
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


def _saved_params(path: Path) -> dict[str, Any]:
    """The params saved in an estimates file: CaImAn's /params groups, then our flat JSON."""
    with h5py.File(path, "r") as fh:
        nested = _read_any(fh["params"]) if "params" in fh else {}
        flat = json.loads(fh.attrs.get("mesmerize_helpers_params", "{}"))
    return {**{g: v for g, v in nested.items() if isinstance(v, dict)}, **flat}


def load_cnmf(path: str | Path) -> CNMF:
    """An estimates file (ours or CaImAn's ``CNMF.save``) as a :class:`CNMF` object."""
    path = Path(path).resolve()  # CaImAn's load_CNMF (to_caiman) relocates bare names
    estimates = load_estimates(path)
    params = CNMFParams(_saved_params(path))
    params.data["dims"] = tuple(estimates.dims)
    return CNMF(estimates, params, path)
