"""Sample projects that ``tunesmith init --template NAME DIR`` writes: realistic, seeded,
deliberately dirty data plus a config, so every stage has something true to show.

Each template is a function ``(out_dir, *, seed, n_tickets) -> summary dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunesmith.sample.support_triage import generate_support_triage

TEMPLATES: dict[str, Callable[..., dict[str, Any]]] = {
    "support-triage": generate_support_triage,
}


def template_names() -> list[str]:
    return sorted(TEMPLATES)


__all__ = ["TEMPLATES", "generate_support_triage", "template_names"]
