"""Schemas the structured-output tests and bench use: what applications send, and what attackers send.

CORPUS holds real-world shapes (nested objects, bounded arrays, enums, anyOf/oneOf, $defs/$ref recursion,
patterns, formats, bounded numbers, optional properties, additionalProperties). HOSTILE holds schemas that
must be refused fast with a 400 naming the field, never compiled for long or answered unconstrained.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


CORPUS: dict[str, Schema] = {
    "flat": _obj({"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "maximum": 150}}),
    "nested": _obj(
        {
            "user": _obj(
                {
                    "id": {"type": "integer", "minimum": 1, "maximum": 10**6},
                    "address": _obj(
                        {
                            "city": {"type": "string", "maxLength": 30},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        }
                    ),
                }
            ),
            "active": {"type": "boolean"},
        }
    ),
    "bounded_array": _obj(
        {"tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}}
    ),
    "enum": _obj({"severity": {"enum": ["low", "medium", "high"]}, "code": {"const": 7}}),
    "any_of": _obj(
        {
            "value": {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 9},
                    {"type": "string", "maxLength": 5},
                    {"type": "null"},
                ]
            }
        }
    ),
    "one_of": _obj(
        {
            "shape": {
                "oneOf": [
                    _obj({"kind": {"const": "circle"}, "r": {"type": "integer", "maximum": 9}}),
                    _obj({"kind": {"const": "square"}, "side": {"enum": [1, 2, 3]}}),
                ]
            }
        }
    ),
    "refs": {
        "$defs": {
            "item": _obj(
                {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                }
            )
        },
        **_obj({"items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 2}}),
    },
    "recursive": {
        "$defs": {
            "node": _obj(
                {
                    "label": {"type": "string", "maxLength": 8},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
                }
            )
        },
        "$ref": "#/$defs/node",
    },
    "numbers": _obj(
        {
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.25},
            "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000},
        }
    ),
    "formats": _obj({"when": {"type": "string", "format": "date"}, "id": {"type": "string", "format": "uuid"}}),
    "optional": _obj(
        {
            "title": {"type": "string", "maxLength": 20},
            "note": {"type": "string", "maxLength": 20},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        required=["title"],
    ),
    "open_object": {
        "type": "object",
        "properties": {"kind": {"enum": ["a", "b"]}},
        "required": ["kind"],
        "patternProperties": {"^n[0-9]$": {"type": "integer", "minimum": 0, "maximum": 99}},
        "additionalProperties": False,
    },
}


def _deep(levels: int) -> Schema:
    schema: Schema = {"type": "string"}
    for _ in range(levels):
        schema = _obj({"x": schema})
    return schema


HOSTILE: dict[str, Schema] = {
    "unknown_type": {"type": "strng"},
    "bad_pattern": _obj({"a": {"type": "string", "pattern": "(unclosed"}}),
    "unknown_format": _obj({"a": {"type": "string", "format": "not-a-format"}}),
    "unsupported_keyword": {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}},
    "dangling_ref": _obj({"a": {"$ref": "#/$defs/missing"}}),
    "huge": _obj({f"field_{i}": {"type": "string", "description": "x" * 200} for i in range(400)}),
    "deep": _deep(200),
    "impossible": {"allOf": [{"type": "integer"}, {"type": "string"}]},
}
