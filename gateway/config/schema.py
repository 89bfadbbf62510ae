"""The JSON Schema of `gateway.yaml`, generated from the models (config/gateway.schema.json)."""

from __future__ import annotations

import json

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .models import INTERPOLATED, Config


class _SchemaGenerator(GenerateJsonSchema):
    """Numbers and booleans may also be written as a ``${VAR}`` string, as `port: ${PORT:-8080}`."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return {"anyOf": [super().int_schema(schema), INTERPOLATED]}

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return {"anyOf": [super().float_schema(schema), INTERPOLATED]}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return {"anyOf": [super().bool_schema(schema), INTERPOLATED]}


def json_schema() -> str:
    """The JSON Schema of `gateway.yaml` (before interpolation), generated from the models."""
    schema = Config.model_json_schema(schema_generator=_SchemaGenerator)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2) + "\n"
