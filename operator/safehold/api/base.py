"""The base every Safehold resource model derives from, and the API group and version.

Kubernetes speaks camelCase and Python snake_case: the alias generator maps one to the
other, so ``spec.credentials_secret_ref`` in Python is ``credentialsSecretRef`` on the
wire. Attribute docstrings become the field descriptions that ``kubectl explain`` shows,
so they are written for the people who write the YAML.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["API_VERSION", "GROUP", "VERSION", "ApiModel"]

#: The API group of every Safehold custom resource.
GROUP = "safehold.io"
#: The one served (and stored) version.
VERSION = "v1alpha1"
#: ``apiVersion`` as it appears in manifests.
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """A part of a custom resource: camelCase on the wire, unknown fields rejected.

    Rejecting unknown fields in Python catches the typos (``keeplast``) that the
    apiserver would silently prune, so :func:`safehold.api.validate_spec` can name them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=False,
    )
