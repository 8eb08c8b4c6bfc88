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

__all__ = ["save_estimates", "load_estimates"]

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


def load_estimates(path: str | Path) -> Any:
    """Read estimates written by :func:`save_estimates` (or by CaImAn's ``CNMF.save``).

    Returns
    -------
    Estimates
        With ``extra["params"]`` holding the saved params (flat dict) when available.
    """
    from ..engine.cnmf import Estimates

    with h5py.File(Path(path), "r") as fh:
        grp = fh["estimates"]
        a = grp["A"]
        A = sp.csc_matrix((a["data"][()], a["indices"][()], a["indptr"][()]),
                          shape=tuple(int(s) for s in a["shape"][()]))
        vals = {name: _read(grp[name]) for name in _ARRAYS if name in grp}
        dims = tuple(int(s) for s in (grp["dims"][()] if "dims" in grp else fh["dims"][()]))
        params: dict[str, Any] = {}
        if "mesmerize_helpers_params" in fh.attrs:
            params = json.loads(fh.attrs["mesmerize_helpers_params"])
        ring: dict[str, Any] = {}
        if "W" in grp:
            w = grp["W"]
            ring["W"] = sp.csc_matrix((w["data"][()], w["indices"][()], w["indptr"][()]),
                                      shape=tuple(int(s) for s in w["shape"][()]))
            ring["b0"] = np.asarray(grp["b0"][()])
            ring.update(json.loads(fh.attrs.get("mesmerize_helpers_ring", "{}")))
    K = A.shape[1]
    T = vals["C"].shape[1] if vals.get("C") is not None else 0

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
    return est
