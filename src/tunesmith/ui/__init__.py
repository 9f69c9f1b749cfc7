"""The web UI: the project dashboard and the reviewers' workbench, over the workspace.

    app.py        create_ui_app(cfg): routes, login, the writes (promote, rollback, rollout)
    review.py     the workbench: one item at a time, keyboard-first, stale-form checks
    pages.py      what each page shows, read through the stages' own functions
    traffic.py    the request log summarised per variant and per hour
    lineage.py    a version's lineage as a server-side SVG graph
    charts.py     the eval ladder with CIs and the reliability diagram, as SVG
    auth.py       keys with roles, signed expiring sessions, CSRF tokens
    project.py    the workspace readers opened once, and a cache of parsed artifacts
    templates/    Jinja2 pages;  static/  ui.css, ui.js and the vendored htmx and uPlot

Needs the ``ui`` extra (jinja2, itsdangerous, python-multipart, markdown-it-py) besides ``serve``.
"""

from tunesmith.ui.app import create_ui_app

__all__ = ["create_ui_app"]
