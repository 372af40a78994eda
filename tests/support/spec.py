"""Read the official OpenAPI spec of the image-actions endpoints (a copy kept in tests/data)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = Path(__file__).parents[1] / "data" / "openapi-image-actions.yaml"


class _StringTimestamps(yaml.SafeLoader):
    """A YAML loader that leaves timestamps as the strings the API would send."""


_StringTimestamps.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@cache
def load_spec() -> dict[str, Any]:
    """Return the parsed spec."""
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_StringTimestamps)  # noqa: S506  (a SafeLoader subclass)


def response(path: str, status: str = "200", method: str = "get") -> dict[str, Any]:
    """Return the application/json content object of one operation's response."""
    return load_spec()["paths"][path][method]["responses"][status]["content"]["application/json"]


def walk(node: Any) -> list[Any]:
    """Return every dict and list nested in ``node``, itself included."""
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found.extend(walk(child))
    return found


def action_examples() -> list[tuple[str, dict[str, Any]]]:
    """Return (where, action) for every action example in the spec."""
    examples = []
    for path, operations in load_spec()["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation.get("responses", {}).items():
                content = answer.get("content", {}).get("application/json", {})
                example = content.get("example")
                if not isinstance(example, dict):
                    continue
                where = f"{method.upper()} {path} {status}"
                listed = example.get("actions")
                single = example.get("action")
                if isinstance(listed, list):
                    examples += [(f"{where} actions[{i}]", a) for i, a in enumerate(listed)]
                if isinstance(single, dict):
                    examples.append((f"{where} action", single))
    return examples


def action_from_property_examples() -> dict[str, Any]:
    """Return an action built from the per-property examples of the list schema."""
    schema = response("/v2/images/{image_id}/actions")["schema"]["allOf"][0]
    properties = schema["properties"]["actions"]["items"]["properties"]
    action = {name: prop["example"] for name, prop in properties.items() if "example" in prop}
    region = properties["region"]["properties"]
    action["region"] = {name: prop["example"] for name, prop in region.items()}
    return action
