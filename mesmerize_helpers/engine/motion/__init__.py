"""NoRMCorre-style motion correction: rigid and piecewise-rigid registration of a movie.

Implements the method of Pnevmatikakis & Giovannucci (2017), "NoRMCorre: An online algorithm
for piecewise rigid motion correction of calcium imaging data", with CaImAn's parameter names
and defaults, as pure array code:

1. A template is built from single frames sampled evenly over the movie (150-200 frames):
   a rough round registers a third of the sample to the median over bins of the sample's
   means, then every sampled frame is registered to a template that does not hold it (the
   rest to the rough template, the rough third to the mean of the rest); the template is
   the mean of the registered sample (then, piecewise, a piecewise-rigid round). The
   registered sample also gives the noise model (:mod:`.weighting`): where shot noise
   makes the noise grow with the brightness, shifts are estimated on square-rooted
   (variance-stabilised) frames and template; the template's noise, measured on the two
   disjoint halves, sets a Wiener filter of the template; where cells fire, frames differ
   from the template by far more than their noise, and those pixels are down-weighted in
   the correlation when that is predicted to pay; piecewise, how much patch shifts deviate
   from the rigid one beyond the noise of a patch-sized estimate (measured on two halves of
   each patch) sets how far they are trusted (a Wiener shrinkage towards the rigid shift).
2. Each chunk of frames is registered to the template. Rigid: the peak of the FFT
   cross-correlation with the template, searched within ``max_shifts`` and refined to sub-pixel
   accuracy with an upsampled DFT around the peak (Guizar-Sicairos et al. 2008), all batched
   over the frames of a chunk (batched ``scipy.fft``). Unlike CaImAn, the correlation is
   normalised for the frame border and the template wraps around smoothly (see
   :class:`.correlation.MaskedTemplates`), which removes the bias towards zero shift of plain
   circular correlation and the ringing of strong brightness gradients. Where the border
   that ``max_shifts`` leaves out is a large part of the field (small fields), the sub-pixel
   stage uses each frame's own mask: every pixel that overlaps the template at that frame's
   displacement. Piecewise rigid: the
   same on overlapping patches (size ``strides + overlaps``) of frames pre-shifted by their
   integer rigid shift, each patch searched within the rigid shift +/-
   ``max_deviation_rigid``; the patch shifts are interpolated (natural cubic spline through
   the patch centres) to a smooth dense per-pixel field that is applied with ``cv2.remap``
   (cubic), so there are no seams. With ``gSig_filt``, shifts are estimated on high-passed
   frames and applied to the raw ones.
3. The registered frames are written chunk by chunk into ``out`` and handed to
   ``accumulate`` (the summary images of the same pass); the final template is the median
   over ``splits_rig`` (``splits_els``) parts of the movie of their mean registered frame.

Shift convention: a shift ``s = (sy, sx)`` (pixels) is what is *applied* to a frame to register
it, ``registered(y, x) = frame(y - sy, x - sx)``. This is the sign of CaImAn's ``shifts_rig``
and ``x_shifts_els``/``y_shifts_els``.

Modules: :mod:`.config` (parameters), :mod:`.grid` (patches, masks, dense shift fields),
:mod:`.correlation` (shift estimation), :mod:`.weighting` (the noise model: pixel weights,
patch shrinkage, ``gSig_filt``), :mod:`.warping` (applying shifts), :mod:`.registration` (a
chunk of frames to one template), :mod:`.template` (templates), :mod:`.driver`
(:func:`motion_correct`: the passes over the movie).
"""

from __future__ import annotations

from .config import MOTION_DEFAULTS, MotionResult
from .driver import motion_correct
from .grid import dense_shift_field, patch_grid
from .weighting import highpass_filter, highpass_kernel

__all__ = [
    "MOTION_DEFAULTS",
    "MotionResult",
    "motion_correct",
    "highpass_kernel",
    "highpass_filter",
    "patch_grid",
    "dense_shift_field",
]
