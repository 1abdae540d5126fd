"""Views of pixel time series: augmentations that act on values and on the missing mask of a Batch.

Every transform takes a :class:`~cropssl.schema.Batch` (and an optional ``torch.Generator``) and returns
a new one; nothing is mutated in place. Transforms are vectorised over the batch (no per-sample Python
loops) and obey one rule: **they never invent data where the mask says missing**. After any transform

* ``x == 0`` wherever ``mask`` is True, and
* a value that was missing stays missing (the mask only grows),

except :class:`RandomTemporalWindow`, which re-indexes time: each kept timestep carries its values, its
mask, its month and its Dynamic World class with it, and the padding it adds is missing.

:class:`LatLonJitter` moves only the location (lat/lon), so that two views of a pixel cannot be matched
by a location they share exactly; :class:`LatLonDropout` hides it (NaN: the encoder leaves the lat/lon
token out).

Each transform has a per-sample probability ``p`` of being applied. Random draws use the ``generator``
when one is given (on the generator's device, then moved to the batch's device), so a seeded CPU
generator makes views reproducible on any device.

Dynamic World is derived from Sentinel-2, so transforms that hide S2 (sensor dropout, synthetic clouds)
or whole timesteps also hide the Dynamic World class there (``dynamic_world = 9``) unless told not to;
otherwise the encoder could read the hidden optical signal back from it.

Views for a method are made by a :class:`ViewGenerator` (``n_global`` global views, plus ``n_local``
local views for DINO that see less of the pixel), configured under ``configs/augment/``.
"""

from cropssl.views.base import Compose, Transform, band_mask
from cropssl.views.generator import ViewGenerator
from cropssl.views.masks import (
    ChannelGroupDropout,
    LatLonDropout,
    RandomTemporalWindow,
    SensorDropout,
    SyntheticCloudMask,
    TimestepDropout,
)
from cropssl.views.values import GaussianNoise, LatLonJitter, MultiplicativeJitter

__all__ = [
    "ChannelGroupDropout",
    "Compose",
    "GaussianNoise",
    "LatLonDropout",
    "LatLonJitter",
    "MultiplicativeJitter",
    "RandomTemporalWindow",
    "SensorDropout",
    "SyntheticCloudMask",
    "TimestepDropout",
    "Transform",
    "ViewGenerator",
    "band_mask",
]
