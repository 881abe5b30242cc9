"""Shared plumbing for simulators whose entities come from a table given at ``init``."""

from __future__ import annotations


def hand_out(names: list[str], created: int, num: int, model: str, what: str) -> tuple[list[dict], int]:
    """Entity dicts for the next ``num`` of ``names`` after ``created``; returns them and the new count."""
    if created + num > len(names):
        raise ValueError(f"only {len(names)} {what} were given, asked for {created + num}")
    return [{"eid": name, "type": model} for name in names[created:created + num]], created + num
