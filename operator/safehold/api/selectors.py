"""Label selectors, in the shape of ``metav1.LabelSelector``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.errors import invalid
from safehold.api.types import LabelKey, Labels, LabelValue

__all__ = ["LabelSelector", "LabelSelectorRequirement"]


class LabelSelectorRequirement(ApiModel):
    """A label key, an operator and values: ``app In (web, api)``."""

    key: LabelKey
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[LabelValue] = Field(default_factory=list, max_length=256)
    """The values for In and NotIn; empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values_as_the_operator_takes_them(self) -> LabelSelectorRequirement:
        """A selector's `In` and `NotIn` name at least one value, `Exists` and
        `DoesNotExist` none, or the apiserver refuses every listing with it."""
        if self.operator in ("In", "NotIn") and not self.values:
            raise invalid("values", f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise invalid("values", f"operator {self.operator} takes no values: remove them")
        return self


class LabelSelector(ApiModel):
    """Selects objects by their labels; all the terms must match."""

    match_labels: Labels = Field(default_factory=dict)
    """Labels that must be present with exactly these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=64)
    """Further requirements on labels."""
