"""An OCSF 1.3.0 validator for the tests, written against the schema itself and not against auditkeep's
mapping: it reads the exported 1.3.0 schema that the `pydantic-ocsf` package ships as JSON (without
importing that package's code) and checks an object's class, required and unknown attributes, types,
`at_least_one` constraints, enum values, sibling captions and type_uid.

The export leaves two `$include`s of the base event unresolved; their attributes (OCSF 1.3.0's
includes/classification.json and includes/occurrence.json) are listed below. Profile includes (cloud,
datetime, host, ...) are left out on purpose: an object that declares no profile may not use their
attributes.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from ipaddress import ip_address
from pathlib import Path
from typing import Any

VERSION = "1.3.0"
_INCLUDES: dict[str, dict[str, str]] = {
    "includes/classification.json": {
        "activity_id": "required", "activity_name": "optional", "category_name": "optional",
        "category_uid": "required", "class_name": "optional", "class_uid": "required", "type_name": "optional",
        "type_uid": "required",
    },
    "includes/occurrence.json": {
        "count": "optional", "duration": "optional", "end_time": "optional", "start_time": "optional",
        "time": "required", "timezone_offset": "recommended",
    },
}
_STRINGS = {"string_t"}
_INTEGERS = {"integer_t", "long_t"}


class Invalid(AssertionError):
    """An object the schema does not allow; the message names the path."""


@cache
def schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("ocsf")  # locates the package without running it
    assert spec is not None and spec.submodule_search_locations, "pydantic-ocsf is a dev dependency"
    path = Path(next(iter(spec.submodule_search_locations))) / "schemas" / f"v{VERSION.replace('.', '_')}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["version"] == VERSION
    return data


def _resolve(table: dict[str, Any], name: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """An event class's or object's attributes through its `extends` chain, and its constraints."""
    chain = []
    node: dict[str, Any] | None = table[name]
    while node is not None:
        chain.append(node)
        parent = node.get("extends")
        node = table.get(parent) if parent else None
    attributes: dict[str, dict[str, Any]] = {}
    # A class's or object's own constraints replace those it inherits (network_endpoint's at_least_one
    # names ip, hostname, ... where _entity's names only name and uid).
    constraints = next(([n["constraints"]] for n in chain if "constraints" in n), [])
    for node in chain[::-1]:
        for key, value in node.get("attributes", {}).items():
            if key == "$include":
                for include in value:
                    for attr, requirement in _INCLUDES.get(include, {}).items():
                        attributes[attr] = {**attributes.get(attr, {}), "requirement": requirement}
                continue
            attributes[key] = {**attributes.get(key, {}), **value}
    return attributes, constraints


@cache
def classes() -> dict[int, tuple[str, int]]:
    """class_uid -> (class name, category_uid), for every concrete class of the release."""
    data = schema()
    categories = {name: c["uid"] for name, c in data["categories_meta"]["attributes"].items()}
    found: dict[int, tuple[str, int]] = {}
    for name, event in data["events"].items():
        if "uid" not in event:
            continue
        node, category = event, None
        while category is None and node is not None:
            category = node.get("category")
            node = data["events"].get(node.get("extends", ""))
        if category in categories:
            found[categories[category] * 1000 + event["uid"]] = (name, categories[category])
    return found


def _base_type(type_name: str) -> str:
    types = schema()["dictionary"]["types"]["attributes"]
    while type_name in types and "type" in types[type_name]:
        type_name = types[type_name]["type"]
    return type_name


def _check_value(value: Any, type_name: str, path: str) -> None:
    objects = schema()["objects"]
    if type_name == "object" or type_name == "json_t":
        if type_name == "object" and not isinstance(value, dict):
            raise Invalid(f"{path}: expected an object, got {value!r}")
        return
    if type_name in objects:
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected a {type_name} object, got {value!r}")
        _check_attributes(value, *_resolve(objects, type_name), path)
        return
    base = _base_type(type_name)
    if base in _STRINGS:
        if not isinstance(value, str):
            raise Invalid(f"{path}: expected a string ({type_name}), got {value!r}")
        if type_name == "ip_t":
            ip_address(value)
    elif base in _INTEGERS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"{path}: expected an integer ({type_name}), got {value!r}")
    elif base == "boolean_t":
        if not isinstance(value, bool):
            raise Invalid(f"{path}: expected a boolean, got {value!r}")
    elif base == "float_t":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Invalid(f"{path}: expected a number, got {value!r}")
    else:
        raise Invalid(f"{path}: type {type_name} unknown to this validator")


def _check_attributes(obj: dict[str, Any], attributes: dict[str, dict[str, Any]],
                      constraints: list[dict[str, Any]], path: str) -> None:
    dictionary = schema()["dictionary"]["attributes"]
    for name, spec in attributes.items():
        if spec.get("requirement") == "required" and name not in obj:
            raise Invalid(f"{path}: required attribute {name!r} missing")
    for constraint in constraints:
        if (names := constraint.get("at_least_one")) and not any(n in obj for n in names):
            raise Invalid(f"{path}: needs at least one of {names}")
    for name, value in obj.items():
        where = f"{path}.{name}" if path else name
        if name not in attributes:
            raise Invalid(f"{where}: attribute unknown to the class or object")
        definition = {**dictionary.get(name, {}), **{k: v for k, v in attributes[name].items() if k != "enum"}}
        enum = {**dictionary.get(name, {}).get("enum", {}), **attributes[name].get("enum", {})}
        if value is None:
            raise Invalid(f"{where}: null (leave the attribute out instead)")
        if definition.get("is_array"):
            if not isinstance(value, list):
                raise Invalid(f"{where}: expected an array, got {value!r}")
            for i, item in enumerate(value):
                _check_value(item, definition["type"], f"{where}[{i}]")
        else:
            _check_value(value, definition["type"], where)
        if enum:
            if str(value) not in enum:
                raise Invalid(f"{where}: {value!r} not in its enum {sorted(enum)}")
            sibling = definition.get("sibling")
            if sibling in obj and value != 99 and obj[sibling] != enum[str(value)]["caption"]:
                raise Invalid(f"{path}.{sibling}: {obj[sibling]!r} is not the caption of {name} {value}")


def validate(event: dict[str, Any]) -> None:
    """Raise Invalid unless `event` is a valid OCSF 1.3.0 event of the class its class_uid names."""
    class_uid = event.get("class_uid")
    if class_uid not in classes():
        raise Invalid(f"class_uid {class_uid!r} is no class of OCSF {VERSION}")
    name, category_uid = classes()[class_uid]
    if event.get("category_uid") != category_uid:
        raise Invalid(f"category_uid {event.get('category_uid')!r}: class {name} is in category {category_uid}")
    _check_attributes(event, *_resolve(schema()["events"], name), "")
    if event["type_uid"] != class_uid * 100 + event["activity_id"]:
        raise Invalid(f"type_uid {event['type_uid']} is not class_uid * 100 + activity_id")
    if event["metadata"]["version"] != VERSION:
        raise Invalid(f"metadata.version {event['metadata']['version']!r}, pinned {VERSION}")
