"""Package discovery for invdiff.

``operators/`` and ``datasets/`` sit at the repository root but install as
``invdiff.operators`` and ``invdiff.datasets`` (never as top-level ``operators`` /
``datasets``, which would shadow other distributions). Metadata lives in pyproject.toml.
"""
from setuptools import find_packages, setup

MAPPED = {"operators": "invdiff.operators", "datasets": "invdiff.datasets"}

packages = find_packages(include=["invdiff", "invdiff.*"])
for folder, name in MAPPED.items():
    packages += [name + sub[len(folder):] for sub in find_packages(include=[folder, folder + ".*"])]

setup(
    packages=packages,
    package_dir={"invdiff": "invdiff", **{name: folder for folder, name in MAPPED.items()}},
)
