"""The shared artifact helpers against independent references (hashlib, json)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from cropssl.artifacts import jsonable, sha256_file


def test_sha256_file_matches_hashlib_over_block_boundaries(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 17)  # two full blocks and a tail
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_jsonable_round_trips_through_json():
    value = {
        1: torch.tensor([1.5, 2.0]),
        "scalar": torch.tensor(3),
        "arr": np.arange(3, dtype=np.int16),
        "np": np.float32(0.25),
        "nan": float("nan"),
        "inf": np.float64(math.inf),
        "nested": ({"p": tmp_path_like()},),
        "obj": object,
    }
    out = json.loads(json.dumps(jsonable(value)))
    assert out["1"] == [1.5, 2.0]
    assert out["scalar"] == 3 and out["arr"] == [0, 1, 2] and out["np"] == 0.25
    assert out["nan"] is None and out["inf"] is None
    assert out["nested"] == [{"p": "/x/y"}]
    assert out["obj"] == str(object)


def tmp_path_like():
    from pathlib import PurePosixPath

    return PurePosixPath("/x/y")
