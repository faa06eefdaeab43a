"""Where stemflow's shipped configuration files are: the model registry, the model configs, karaoke settings.

The repository's top-level ``configs/`` is the one source of these files (the
design card). A wheel carries the same folder *inside* the package, as
``stemflow/configs/`` (``setup.py`` maps ``configs/`` to the ``stemflow.configs``
package), so an installed stemflow finds its registry from any working
directory. A checkout, or an editable install, has no ``stemflow/configs/`` and
reads ``configs/`` next to the package instead. The installed copy wins when
both exist, so a stray ``configs/`` folder near site-packages is never read.

Standard library only, so every layer may ask.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from stemflow.errors import ConfigError

REGISTRY_FILENAME = "registry.yaml"
KARAOKE_FILENAME = "karaoke.yaml"


def configs_dir() -> Path:
    """The folder holding ``models/`` and ``karaoke.yaml``: the installed package's, else the checkout's.

    Raises:
        ConfigError: neither exists (a broken installation), naming both places looked at.
    """
    packaged = resources.files("stemflow") / "configs"
    if isinstance(packaged, Path) and (packaged / "models" / REGISTRY_FILENAME).is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "configs"
    if (source / "models" / REGISTRY_FILENAME).is_file():
        return source
    raise ConfigError(
        f"stemflow's configuration files are missing: looked for {packaged}/models/{REGISTRY_FILENAME} "
        f"(installed package) and {source}/models/{REGISTRY_FILENAME} (source checkout); reinstall stemflow"
    )


def model_configs_dir() -> Path:
    """``configs/models/``: the registry and the community-format model configs."""
    return configs_dir() / "models"


def registry_path() -> Path:
    """``configs/models/registry.yaml``."""
    return model_configs_dir() / REGISTRY_FILENAME


def karaoke_config_path() -> Path:
    """``configs/karaoke.yaml``: the karaoke dataset defaults."""
    return configs_dir() / KARAOKE_FILENAME
