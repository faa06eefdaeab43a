"""Package list for setuptools (everything else is in pyproject.toml).

The top-level ``configs/`` folder stays the one source of the model registry,
the model configs and the karaoke defaults; the wheel carries it inside the
package as ``stemflow/configs/`` so an installed stemflow finds it from any
directory (:mod:`stemflow.bundled_configs`). pyproject.toml cannot map a
folder outside the package tree into it next to automatic package discovery,
hence these few lines.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["stemflow", "stemflow.*", "pipelines", "pipelines.*"]),
        "stemflow.configs",
        "stemflow.configs.models",
    ],
    package_dir={"stemflow.configs": "configs"},
)
