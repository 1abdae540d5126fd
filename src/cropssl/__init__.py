"""cropssl: self-supervised pre-training for satellite pixel time series, built for crop type mapping.

Importing the package is light: :func:`load_encoder` needs only torch and safetensors (no Lightning, no
Hydra). ``cropssl.load_encoder`` and ``cropssl.export_encoder`` are imported on first use.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "export_encoder", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from cropssl.export_dir import load_encoder

        return load_encoder
    if name == "export_encoder":
        from cropssl.export import export_encoder

        return export_encoder
    raise AttributeError(f"module 'cropssl' has no attribute {name!r}")
