"""The examples in the docstrings of the sampler core run and print what they say."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch

MODULES = ["invdiff.samplers.likelihood", "invdiff.samplers.problem", "invdiff.samplers.guidance",
           "invdiff.samplers.consistency", "invdiff.samplers.dds", "invdiff.samplers.dps",
           "invdiff.samplers.red_diff", "invdiff.samplers.smc", "invdiff.samplers.registry", "invdiff.tasks"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, one_thread):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} doctest examples failed"
