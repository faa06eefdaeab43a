"""The model hub: everything from a model's name to its weights loaded into a model.

- ``registry``: the published models stemflow knows by name (``configs/models/registry.yaml``).
- ``cache``: the weights cache: where checkpoints live, verified copies, sidecar hashes, offline instructions.
- ``download``: one weights download: streamed, hashed while it streams, verified, then published.
- ``pins``: hashes pinned on first download for sources that publish none (``pins.json``).
- ``locks``: advisory file locks that serialise downloads and pin updates between processes.
- ``loading``: ``load_registered`` / ``load_custom`` / ``default_model_name``, giving a ``LoadedModel``.
- ``model_id``: the name under which a model's stems and records are stored.
- ``spec``: ``ModelSpec``, the picklable description a worker loads its model from.
- ``model_list``: the rows of ``stemflow models list``.
"""
