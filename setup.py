"""Package list for setuptools (the rest of the metadata is in pyproject.toml).

The presets live in the top-level presets/ folder, which is not inside a package; pyproject.toml's package
discovery cannot map it, so it is shipped here as the data package `bridge.shipped_presets` (the wheel's
bridge/shipped_presets/). `bridge.controls.presets.presets_dir()` finds either copy.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bridge*", "drivers*"]), "bridge.shipped_presets"],
    package_dir={"bridge.shipped_presets": "presets"},
)
