"""Real labelled WorldCereal samples for the evaluation tests (skipped when ../shared is absent)."""

from __future__ import annotations

import pytest
import torch

from cropssl.schema import PixelSamples
from tests.conftest import REAL_FILES, require_shared


@pytest.fixture
def one_thread():
    """One torch thread (the machine is shared: faster and steadier); opt in with ``usefixtures``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def east_africa() -> PixelSamples:
    """The 500 East African samples (T=12)."""
    require_shared(REAL_FILES["wide"])
    from cropssl.data.ingest import read_input

    return read_input(REAL_FILES["wide"], 12)[0]


@pytest.fixture(scope="session")
def france() -> PixelSamples:
    """The 500 French LPIS parcels (T=12)."""
    require_shared(REAL_FILES["long"])
    from cropssl.data.ingest import read_input

    return read_input(REAL_FILES["long"], 12)[0]
