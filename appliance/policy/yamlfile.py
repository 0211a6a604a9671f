"""YAML read with its line numbers kept, so every error in a pack can point at "file:line".

PyYAML's `safe_load` forgets where values came from and silently keeps the last of two equal keys; a
policy that says one thing on line 10 and the opposite on line 40 must be refused, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from appliance.policy.errors import PolicyError


class YamlDoc:
    """One parsed YAML file: its data, and the node tree to find the line of any path within it."""

    def __init__(self, raw: bytes, display: str) -> None:
        self.display = display
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{display}:1: not UTF-8 text") from exc
        try:
            self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data: Any = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            raise PolicyError(f"{display}:{line}: invalid YAML: {exc.problem or exc.context}") from exc
        except yaml.YAMLError as exc:
            raise PolicyError(f"{display}:1: invalid YAML: {exc}") from exc
        if self.node is not None:
            _refuse_duplicate_keys(self.node, display)

    def line_of(self, loc: Sequence[Any]) -> int:
        """The 1-based line of the value at `loc` (keys and list indexes), or of its nearest parent."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else 1
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line

    def error(self, loc: Sequence[Any], message: str) -> PolicyError:
        return PolicyError(f"{self.display}:{self.line_of(loc)}: {message}")


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return value if not isinstance(value, yaml.ScalarNode) or value.value != "" else key
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]
    return None


def _refuse_duplicate_keys(node: Any, display: str) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                if key.value in seen:
                    raise PolicyError(f"{display}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
                seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
