"""stemflow: catalogue-scale music source separation.

The library layer (this package) depends on torch, numpy, soundfile, soxr,
pyarrow and fsspec only; Ray lives in :mod:`stemflow.ray_stage` and Prefect in
``pipelines/``.
"""

__version__ = "0.1.0"
