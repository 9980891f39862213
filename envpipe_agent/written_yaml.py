"""YAML read as written: every scalar is the text the user typed.

PyYAML implements YAML 1.1, where ``Yes``, ``No``, ``on`` and ``off`` are booleans,
``010`` is the octal number 8 and ``1.10`` the float 1.1. Terraform variables want
those types (HCL has real booleans and numbers), but a CloudFormation parameter is a
string: ``CreateDHCPOptionSet: Yes`` must reach CloudFormation as ``Yes``, not as
``true``, or it fails the template's ``AllowedValues: [Yes, No]``. So envpipe.yml's
vars, and a template's Parameters, are also constructed with this constructor, from
the same parsed nodes: only an explicit null (``~``, ``null``, nothing) stays None.
"""
from __future__ import annotations

from typing import Any

import yaml

NULL_TAG = "tag:yaml.org,2002:null"
# Tags a plain scalar resolves to in YAML 1.1 besides str (and null).
TYPED_TAGS = tuple(f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float", "timestamp"))


class WrittenLoader(yaml.SafeLoader):
    """SafeLoader whose booleans, numbers and timestamps are their text."""


for _tag in TYPED_TAGS:
    WrittenLoader.add_constructor(_tag, yaml.constructor.SafeConstructor.construct_scalar)


def construct_as_written(node: yaml.Node) -> Any:
    """The data of an already composed (and checked) ``node``, scalars as written."""
    return WrittenLoader("").construct_document(node)

