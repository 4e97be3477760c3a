"""Every config field is documented: each field of each spec model carries a description."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from pydantic import BaseModel

import modelfleet.config
from modelfleet.config.base import SpecModel


def _spec_models() -> list[type[BaseModel]]:
    for module in pkgutil.iter_modules(modelfleet.config.__path__):
        importlib.import_module(f"modelfleet.config.{module.name}")
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [SpecModel]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            pending.append(sub)
    return [cls for cls in found if cls.__module__.startswith("modelfleet.config")]


@pytest.mark.parametrize("model", _spec_models(), ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    undocumented = [
        name for name, field in model.model_fields.items() if not (field.description or "").strip()
    ]
    assert not undocumented, f"{model.__name__} fields without description=: {undocumented}"
