"""Weighted mixes of shard sources (``data=mix``): new data plus a replay fraction of old data."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from cropssl.data.shards import resolve_shards


def parse_mix(spec: Any) -> tuple[list[list[str]], list[float]]:
    """Split a shard spec into sources and weights.

    A spec is a single shard spec (string / list of strings: one source, weight 1) or a list of
    ``{"shards": spec, "weight": w}`` mappings: a weighted mix, e.g. new data plus a replay fraction of
    old data. Shards are drawn from source *i* with probability ``w_i / sum(w)``.

    Raises:
        ValueError: a negative weight, weights summing to 0, or a malformed entry.

    """
    if isinstance(spec, (str, os.PathLike)) or not isinstance(spec, Sequence):
        return [resolve_shards(spec)], [1.0]
    items = list(spec)
    if not any(isinstance(i, Mapping) for i in items):
        return [resolve_shards(items)], [1.0]
    sources, weights = [], []
    for item in items:
        if not isinstance(item, Mapping) or "shards" not in item:
            raise ValueError(f"each entry of a data mix needs 'shards' and 'weight', got {item!r}")
        w = float(item.get("weight", 1.0))
        if w < 0:
            raise ValueError(f"mix weight of {item['shards']} is negative ({w}); weights must be >= 0")
        sources.append(resolve_shards(item["shards"]))
        weights.append(w)
    if sum(weights) <= 0:
        raise ValueError(f"mix weights {weights} sum to 0; give at least one source a positive weight")
    return sources, weights
