"""YAML → Python with the line and column of every key and value.

Two deliberate departures from PyYAML's YAML 1.1 defaults, because recipes are written by
people:

- only ``true``/``false`` are booleans (YAML 1.2): ``on:``, ``yes``, ``no``, ``off`` stay
  strings. Under YAML 1.1 the recipe key ``on`` would load as the boolean ``True`` (the
  same trap GitHub Actions users hit) and the country code ``NO`` as ``False``;
- a key repeated in one mapping is an error, not a silent "last one wins".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    pass


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class Pos:
    """1-based line and column of a value, and of its key when it has one."""

    line: int
    column: int
    key_line: int
    key_column: int
    style: str | None = None  # '|' or '>' for block scalars


@dataclass(frozen=True)
class YamlIssue:
    line: int
    column: int
    message: str
    hint: str | None = None


@dataclass
class Document:
    data: Any
    positions: dict[Path_, Pos]
    issues: list[YamlIssue]

    def pos(self, path: Path_) -> Pos:
        """Position of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), Pos(1, 1, 1, 1))


def _key(node: ScalarNode) -> Any:
    """The Python value PyYAML constructs for a plain scalar key (1 -> int, ~ -> None)."""
    tag = node.tag  # resolved by the composer (quoted scalars are already str)
    try:
        if tag.endswith(":int"):
            return int(node.value.replace("_", ""), 0)
        if tag.endswith(":float"):
            return float(node.value.replace("_", ""))
        if tag.endswith(":null"):
            return None
        if tag.endswith(":bool"):
            return node.value.lower() == "true"
    except ValueError:
        return node.value
    return node.value


def _index(node: Node, path: Path_, out: dict[Path_, Pos], issues: list[YamlIssue]) -> None:
    if isinstance(node, MappingNode):
        seen: dict[Any, int] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode):
                continue
            key: Any = _key(knode)
            if key == "<<":
                continue
            if key in seen:
                issues.append(
                    YamlIssue(
                        knode.start_mark.line + 1,
                        knode.start_mark.column + 1,
                        f"key '{key}' appears twice in the same mapping",
                        f"first at line {seen[key]}; remove one",
                    )
                )
            else:
                seen[key] = knode.start_mark.line + 1
            style = vnode.style if isinstance(vnode, ScalarNode) else None
            out[(*path, key)] = Pos(
                vnode.start_mark.line + 1,
                vnode.start_mark.column + 1,
                knode.start_mark.line + 1,
                knode.start_mark.column + 1,
                style if style in ("|", ">") else None,
            )
            _index(vnode, (*path, key), out, issues)
    elif isinstance(node, SequenceNode):
        for i, vnode in enumerate(node.value):
            style = vnode.style if isinstance(vnode, ScalarNode) else None
            line, col = vnode.start_mark.line + 1, vnode.start_mark.column + 1
            out[(*path, i)] = Pos(line, col, line, col, style if style in ("|", ">") else None)
            _index(vnode, (*path, i), out, issues)


def load_yaml(text: str) -> Document:
    """Parse one YAML document; problems come back as ``issues`` (never raised)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, {(): Pos(1, 1, 1, 1)}, [])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        msg = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        hint = None
        if "expected a single document" in msg:
            msg = "more than one YAML document ('---') in the file"
            hint = "put one recipe per file"
        elif "\\t" in msg or "'\\t'" in msg:
            hint = "YAML does not allow tabs for indentation; use spaces"
        elif "unhashable key" in msg:
            hint = "quote a value that starts with '{{': text: \"{{ data.x }}\""
        elif "mapping values are not allowed" in msg:
            hint = "quote values that contain ': ' (for example text: \"a: b\")"
        elif "found character '@'" in msg or "found character '`'" in msg:
            hint = "quote the value"
        elif "expected <block end>" in msg or "did not find expected key" in msg:
            hint = "check the indentation, or quote a value that starts with '{{' or '['"
        return Document(None, {}, [YamlIssue(line, col, f"invalid YAML: {msg}", hint)])
    except yaml.YAMLError as exc:
        return Document(None, {}, [YamlIssue(1, 1, f"invalid YAML: {exc}")])
    finally:
        loader.dispose()
    positions: dict[Path_, Pos] = {
        (): Pos(node.start_mark.line + 1, node.start_mark.column + 1, 1, 1)
    }
    issues: list[YamlIssue] = []
    _index(node, (), positions, issues)
    return Document(data, positions, issues)
