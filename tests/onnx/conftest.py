"""Fixtures of the ONNX tests: each model of ``onnx_models.BUILDERS`` in turn."""

import pytest
from onnx_models import BUILDERS


@pytest.fixture(params=sorted(BUILDERS))
def model_name(request):
    return request.param


@pytest.fixture
def model(model_name):
    return BUILDERS[model_name]()
