"""Refusing bad items early: names, params and movies checked before anything is written.

``add_item``, ``update_params`` and ``add_grid`` call these before touching the batch, and a
job calls them again before it runs (the TSV may have been edited by hand), so a bad value
is reported by name, with what to do, instead of failing deep inside an algorithm.
Movie checks read headers only; the job's full check of the pixels is :func:`check_finite`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .engine.params import (
    CAIMAN_PARAM_GROUPS,
    CAIMAN_PARAM_KEYS,
    UnknownParameterError,
    flatten_main,
    nearest_key,
)
from .param_types import TYPES_KEY, encode_types

#: Top-level params keys besides ``"main"`` (CaImAn's params) and what they hold.
TOP_LEVEL_KEYS = {
    "main": "CaImAn's parameters", "refit": "refit CNMF after the first fit (bool, default False)",
    "eval": "quality params for component evaluation", "resources": "job mem_mb/runtime/cpus",
    "scatter_patches": "fit patches as separate jobs (bool)", "Ain": "seed masks (.npy) or 'somata'",
    "Ain_path": "seed masks (.npy)", "somata": "options of the 'somata' seeds",
}
#: Smallest movie an item can run on.
MIN_FRAMES, MIN_SIDE = 2, 4


class InvalidItemError(ValueError):
    """An item (name, params or movie) that cannot run; the message says what to change."""


# --- value checks ----------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value)


def _is_num(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool) and math.isfinite(float(value)))


def _scalar_or_pair(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        if isinstance(value, (list, tuple, np.ndarray)):
            return len(value) == 2 and all(check(v) for v in value)
        return check(value)
    return ok


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda value: any(value is c if isinstance(c, bool) else value == c for c in choices)


_INT_GE0 = lambda v: _is_int(v) and v >= 0  # noqa: E731
_INT_GE1 = lambda v: _is_int(v) and v >= 1  # noqa: E731
_POSITIVE = lambda v: _is_num(v) and v > 0  # noqa: E731
_BOOL = lambda v: isinstance(v, (bool, np.bool_))  # noqa: E731


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: _is_num(v) and low <= v <= high


#: CaImAn params checked for type and range: key -> (check, what a valid value is).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # motion correction
    "max_shifts": (_scalar_or_pair(_INT_GE0), "a pair (y, x) of integers >= 0 (pixels)"),
    "strides": (_scalar_or_pair(_INT_GE1), "a pair (y, x) of integers >= 1 (pixels)"),
    "overlaps": (_scalar_or_pair(_INT_GE0), "a pair (y, x) of integers >= 0 (pixels)"),
    "max_deviation_rigid": (lambda v: _is_num(v) and v >= 0, "a number >= 0 (pixels)"),
    "pw_rigid": (_BOOL, "True or False"),
    "border_nan": (_one_of(True, False, "copy", "min"), "True, False, 'copy' or 'min'"),
    "gSig_filt": (_optional(_scalar_or_pair(_POSITIVE)), "None or a pair of numbers > 0 (pixels)"),
    "niter_rig": (_INT_GE1, "an integer >= 1"), "niter_els": (_INT_GE1, "an integer >= 1"),
    "splits_rig": (_INT_GE1, "an integer >= 1"), "splits_els": (_INT_GE1, "an integer >= 1"),
    "num_frames_split": (_INT_GE1, "an integer >= 1"),
    "upsample_factor_grid": (_INT_GE1, "an integer >= 1"),
    # source extraction
    "K": (_optional(_INT_GE1), "an integer >= 1 (components per patch), or None for CNMF-E"),
    "gSig": (_scalar_or_pair(_POSITIVE), "a pair (y, x) of numbers > 0 (neuron half-size, px)"),
    "gSiz": (_optional(_scalar_or_pair(_POSITIVE)), "None or a pair of numbers > 0 (pixels)"),
    "rf": (_optional(_scalar_or_pair(_INT_GE1)), "None or an integer >= 1 (patch half-size, px)"),
    "stride": (_optional(_scalar_or_pair(_INT_GE0)), "None or an integer >= 0 (patch overlap, px)"),
    "p": (lambda v: _is_int(v) and 0 <= v <= 2, "0, 1 or 2 (order of the calcium dynamics)"),
    "nb": (_INT_GE0, "an integer >= 0 (background components)"),
    "merge_thr": (_between(0, 1), "a number between 0 and 1"),
    "min_SNR": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "rval_thr": (_between(-1, 1), "a number between -1 and 1"),
    "rval_lowest": (_between(-1, 1), "a number between -1 and 1"),
    "decay_time": (_POSITIVE, "a number > 0 (seconds)"),
    "fr": (_POSITIVE, "a number > 0 (frames per second)"),
    "ssub": (_INT_GE1, "an integer >= 1"), "tsub": (_INT_GE1, "an integer >= 1"),
    "ssub_B": (_INT_GE1, "an integer >= 1"), "nIter": (_INT_GE1, "an integer >= 1"),
    "ITER": (_INT_GE1, "an integer >= 1"),
    "ring_size_factor": (_POSITIVE, "a number > 0"),
    "min_corr": (_between(0, 1), "a number between 0 and 1"),
    "min_pnr": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "method_init": (_one_of("greedy_roi", "corr_pnr", "sparse_nmf", "graph_nmf", "pca_ica"),
                    "'greedy_roi', 'corr_pnr', 'sparse_nmf', 'graph_nmf' or 'pca_ica'"),
    "var_name_hdf5": (lambda v: isinstance(v, str) and bool(v), "a dataset name"),
}
#: Top-level params checked for type.
TOP_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "refit": (_BOOL, "True or False"), "scatter_patches": (_BOOL, "True or False"),
    "eval": (lambda v: isinstance(v, Mapping), "a dict of quality params"),
    "resources": (lambda v: isinstance(v, Mapping), "a dict (mem_mb, runtime, cpus_per_task)"),
}


def _unknown(key: str, valid: set[str], where: str) -> UnknownParameterError:
    same_letters = [v for v in valid if v.lower() == key.lower()]  # min_snr -> min_SNR
    hint = same_letters[0] if same_letters else nearest_key(key, valid)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return UnknownParameterError(f"Unknown parameter {key!r} in {where}.{did_you_mean}")


def check_item_name(item_name: Any) -> str:
    """An item name: a non-empty string (mesmerize-core groups items by it)."""
    if item_name is None or not isinstance(item_name, str) or not item_name.strip():
        raise InvalidItemError(
            f"item_name must be a non-empty string (usually the movie's name); got {item_name!r}.")
    return item_name


def check_params(algo: str, params: Any) -> None:
    """Check an item's params: known keys (else the nearest valid name), types and ranges.

    Raises
    ------
    TypeError
        When params is not a dict with a ``"main"`` dict, or not JSON-serialisable.
    UnknownParameterError
        For a key that CaImAn does not know; the message names the nearest valid key.
    InvalidItemError
        For a value of the wrong type or out of range; the message says what is valid.
    """
    from .batch import params_to_json

    params_to_json(encode_types(params))  # TypeError: not {"main": {...}}, or not JSON (NaN)
    for key, value in params.items():
        if key == TYPES_KEY:  # the TSV's note of which values were tuples or paths
            continue
        if key not in TOP_LEVEL_KEYS:
            raise _unknown(key, set(TOP_LEVEL_KEYS), "params (top level: "
                           + ", ".join(sorted(TOP_LEVEL_KEYS)) + ")")
        if key in TOP_RULES and not TOP_RULES[key][0](value):
            raise InvalidItemError(f"params[{key!r}] = {value!r} must be {TOP_RULES[key][1]}.")
    main = flatten_main(params["main"])
    for key, value in main.items():
        if key not in CAIMAN_PARAM_KEYS:
            raise _unknown(key, set(CAIMAN_PARAM_KEYS), f"params['main'] of this {algo} item")
        if key in RULES and not RULES[key][0](value):
            raise InvalidItemError(f"{algo} parameter {key} = {value!r} is invalid: it must be "
                                   f"{RULES[key][1]}.")
    for key in params.get("eval") or {}:
        if key not in CAIMAN_PARAM_GROUPS["quality"]:
            raise _unknown(key, set(CAIMAN_PARAM_GROUPS["quality"]), "params['eval'] (quality params)")


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return float(value[0]), float(value[1])
    return float(value), float(value)


def check_params_for_movie(algo: str, params: Mapping[str, Any], shape: tuple[int, ...]) -> None:
    """Checks that need the movie's frame size ``shape`` = (frames, y, x)."""
    dims = shape[1:]
    main = flatten_main(params["main"])
    if algo == "mcorr":
        shifts = _pair(main.get("max_shifts", 6))
        if any(2 * s >= d for s, d in zip(shifts, dims)):
            raise InvalidItemError(
                f"max_shifts = {main.get('max_shifts', (6, 6))} is too large for frames of "
                f"{dims[0]} x {dims[1]} pixels: it must be less than half the frame size.")
    else:
        gsig = _pair(main.get("gSig", 5 if algo == "cnmf" else 3))
        if any(4 * g >= d for g, d in zip(gsig, dims)):
            raise InvalidItemError(
                f"gSig = {main.get('gSig')} (neuron half-size) is too large for frames of "
                f"{dims[0]} x {dims[1]} pixels: use a gSig below a quarter of the frame size.")


def check_item(
    algo: str, params: Any, item_name: Any = "item", movie: str | os.PathLike | None = None
) -> None:
    """Everything ``add_item`` / ``update_params`` / ``add_grid`` check before writing: the
    name, the params and, for an item on a raw movie, the movie's header and the params
    that depend on its frame size."""
    check_item_name(item_name)
    check_params(algo, params)
    if movie is not None:
        var_name = flatten_main(params["main"]).get("var_name_hdf5", "mov")
        check_params_for_movie(algo, params, check_movie(movie, var_name))


# --- movies --------------------------------------------------------------------------------

@contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """Collect what tifffile logs while reading a header (it logs, not raises, a broken
    page chain)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, logger = Collect(level=logging.WARNING), logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _tiff_problem(path: Path) -> str | None:
    """Why a TIFF's header promises more data than the file holds, or None."""
    import tifffile

    size = path.stat().st_size
    with _tifffile_warnings() as messages, tifffile.TiffFile(path) as tif:
        if not tif.series:
            return "it holds no image (damaged, or not a TIFF movie)"
        series = tif.series[0]
        if series.dataoffset is not None:
            end = series.dataoffset + series.nbytes
        else:
            last = series.pages[-1] if hasattr(series, "pages") else tif.pages[-1]
            end = max((o + c for o, c in zip(last.dataoffsets, last.databytecounts)), default=0)
    if end > size:
        return f"it is truncated: the file has {size} bytes, its header describes {end}"
    broken = [m for m in messages if "invalid" in m.lower() or "corrupt" in m.lower()]
    if broken:
        return f"its page chain is broken ({broken[0]}): the file is truncated or damaged"
    return None


def check_movie(path: str | os.PathLike, var_name_hdf5: str = "mov") -> tuple[int, int, int]:
    """Check that ``path`` is a readable movie of shape (frames >= 2, y, x), from its
    header only, and return the shape.

    Raises
    ------
    InvalidItemError
        Naming the file and what is wrong with it (missing, unreadable, truncated, a single
        image, frames too small).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidItemError(f"Movie {path} does not exist (or is not a file).")
    if not os.access(path, os.R_OK):
        raise InvalidItemError(f"Movie {path} is not readable by this user (check its permissions).")
    stat = path.stat()
    return _checked_movie(path, var_name_hdf5, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _checked_movie(path: Path, var_name_hdf5: str, size: int, mtime_ns: int) -> tuple[int, int, int]:
    # a grid adds many items on one movie: read its header once per version of the file
    from .io.movies import open_movie

    try:
        if path.suffix.lower() in (".tif", ".tiff", ".btf"):
            problem = _tiff_problem(path)
            if problem:
                raise InvalidItemError(f"Movie {path} cannot be used: {problem}. Copy it again "
                                       "from the acquisition machine or re-export it.")
        shape = tuple(int(n) for n in open_movie(path, var_name_hdf5=var_name_hdf5).shape)
    except InvalidItemError:
        raise
    except Exception as err:  # every reader's failure says the same thing to the user
        raise InvalidItemError(f"Movie {path} cannot be read: {err}") from err
    if len(shape) != 3:
        raise InvalidItemError(f"Movie {path} has shape {shape}; expected (frames, y, x).")
    frames, y, x = shape
    if frames < MIN_FRAMES:
        what = "no frames" if frames == 0 else "a single frame (an image, not a movie)"
        raise InvalidItemError(f"Movie {path} has {what}: shape {shape}. An item needs a movie "
                               f"of at least {MIN_FRAMES} frames, shape (frames, y, x).")
    if min(y, x) < MIN_SIDE:
        raise InvalidItemError(f"Movie {path} has frames of {y} x {x} pixels (shape {shape}); "
                               f"an item needs at least {MIN_SIDE} x {MIN_SIDE}. Is the axis "
                               "order (frames, y, x)?")
    return frames, y, x


def nonfinite_pixels(movie: Any, chunk: int = 200) -> tuple[int, tuple[int, int, int] | None]:
    """How many NaN or infinite values a (frames, y, x) movie holds, and where the first is
    (frame, y, x); integer movies cannot hold any and are not read."""
    if not np.issubdtype(np.dtype(movie.dtype), np.floating):
        return 0, None
    total, first = 0, None
    for start in range(0, movie.shape[0], chunk):
        bad = ~np.isfinite(np.asarray(movie[start:start + chunk]))
        if bad.any():
            total += int(bad.sum())
            if first is None:
                f, y, x = (int(i[0]) for i in np.nonzero(bad))
                first = (start + f, y, x)
    return total, first


def check_finite(movie: Any, path: str | os.PathLike, chunk: int = 200,
                 hint: str = "Replace them (e.g. with numpy.nan_to_num or the frame's median) "
                             "and save the movie again.") -> None:
    """Refuse a float movie holding NaN or infinite pixels, naming the first frame and pixel
    (one NaN would otherwise spread through the registration template into every frame);
    ``hint`` says what to do."""
    total, first = nonfinite_pixels(movie, chunk)
    if first is not None:
        raise InvalidItemError(
            f"Movie {path} has {total} NaN or infinite pixel value(s), the first in frame "
            f"{first[0]} at (y={first[1]}, x={first[2]}). {hint}")
