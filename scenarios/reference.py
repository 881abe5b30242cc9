"""The scenario schema as a reference: every key with its type, bounds, default and the comment that documents it;
the same for a controller's parameters.

The sections and keys are the pydantic models of :mod:`dercosim.scenarios.config`; a key's text is its ``#:``
comment there (above the field or at the end of its line), so the reference cannot drift from the code.
``docs/gen_reference.py`` writes it to ``docs/reference/scenario.md``; ``dercosim show`` uses it for a
controller's parameters.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the ``#:`` comment documenting it in ``model``'s source (its bases' too)."""
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in source.splitlines()[1:]:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            found = re.match(r"^    (\w+)\s*:", line)
            if found and found.group(1) in model.model_fields:
                trailing = re.search(r"#:\s*(.*)$", line)
                text = " ".join(pending + ([trailing.group(1).strip()] if trailing else []))
                if text:
                    docs[found.group(1)] = text
            if not stripped.startswith("#"):
                pending = []
    return docs


def type_text(annotation: Any) -> str:
    """A short readable type: ``int``, ``"fast" | "pandapower"``, ``list[int]``, ``Clock``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a).replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def bounds_text(info: FieldInfo) -> str:
    """The numeric and length bounds of a field: ``≥ 0``, ``0 < x ≤ 1``, ``at most 100 characters``."""
    parts = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("multiple_of", "multiple of")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        for attr, text in (("min_length", "at least {} items"), ("max_length", "at most {} items/characters"),
                           ("pattern", "matching `{}`")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(text.format(value))
    return ", ".join(parts)


def default_text(info: FieldInfo) -> str:
    """The default as TOML would write it (``"required"`` if there is none)."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True) if info.default is PydanticUndefined else info.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none (section absent)"
    return str(value)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (directly, optionally, or as a list of them), if any."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return nested_model(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = nested_model(arg)
            if found is not None:
                return found
        return None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def rows(model: type[BaseModel]) -> list[tuple[str, str, str, str, str]]:
    """(key, type, bounds, default, text) for each field of ``model``, sections as "(section)"."""
    docs = field_docs(model)
    out = []
    for name, info in model.model_fields.items():
        out.append((name, type_text(info.annotation), bounds_text(info), default_text(info),
                    docs.get(name, info.description or "")))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(model: type[BaseModel], prefix: str = "") -> str:
    """The reference of ``model`` and every section below it, one Markdown table per section."""
    sections: list[tuple[str, type[BaseModel]]] = [(prefix, model)]
    seen: set[tuple[str, type]] = set()
    text = []
    while sections:
        path, current = sections.pop(0)
        if (path, current) in seen:
            continue
        seen.add((path, current))
        heading = f"`[{path}]`" if path else "top level"
        doc = inspect.cleandoc(current.__doc__ or "") if current.__doc__ else ""
        text.append(f"## {heading}\n")
        if doc:
            text.append(doc.split("\n\n")[0].replace("\n", " ") + "\n")
        text.append("| key | type | bounds | default | meaning |\n| --- | --- | --- | --- | --- |")
        for (name, typ, bounds, default, what), info in zip(rows(current), current.model_fields.values()):
            text.append(f"| `{name}` | {_cell(typ)} | {_cell(bounds)} | {_cell(default)} | {_cell(what)} |")
            sub = nested_model(info.annotation)
            if sub is not None:
                is_list = typing.get_origin(info.annotation) is list or "list[" in typ
                sections.append((f"{path}.{name}" if path else name, sub) if not is_list
                                else (f"{path}.{name}[]" if path else f"{name}[]", sub))
        text.append("")
    return "\n".join(text)


def parameter_table(cls: type, params: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """(name, value this scenario gives it, default, what it is) for each parameter of controller ``cls``: from its
    ``Params`` model (defaults and ``#:`` comments), else :meth:`BaseController.parameters`, else the
    constructor's signature. A value of ``...`` means none is given and there is no default."""
    model = getattr(cls, "Params", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        docs = field_docs(model)
        resolved = model.model_validate(params).model_dump()
        return [(name, resolved.get(name, ...), ... if info.is_required() else info.default,
                 docs.get(name, info.description or "")) for name, info in model.model_fields.items()]
    declared = getattr(cls, "parameters", None)
    if callable(declared):
        try:
            defaults = dict(declared())
        except TypeError:
            defaults = None
        if defaults is not None:
            return [(n, params.get(n, d), d, "") for n, d in defaults.items()]
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return [(n, v, ..., "") for n, v in params.items()]
    out = []
    for name, p in signature.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is p.empty else p.default
        out.append((name, params.get(name, default), default, ""))
    return out
