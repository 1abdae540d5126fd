"""cropssl: self-supervised pre-training for satellite pixel time series, built for crop type mapping.

Importing the package is light: :func:`load_encoder` needs only torch and safetensors.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
