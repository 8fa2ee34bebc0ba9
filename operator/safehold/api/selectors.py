"""Label selectors, in the shape of ``metav1.LabelSelector``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from safehold.api.base import ApiModel

__all__ = ["LabelSelector", "LabelSelectorRequirement"]


class LabelSelectorRequirement(ApiModel):
    """A label key, an operator and values: ``app In (web, api)``."""

    key: str = Field(min_length=1, max_length=317)
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] = Field(default_factory=list, max_length=256)
    """The values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """Selects objects by their labels; all the terms must match."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must be present with exactly these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=64)
    """Further requirements on labels."""
