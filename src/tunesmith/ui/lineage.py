"""A model version's lineage drawn as a graph: sources → snapshot → training run → version →
evals → alias moves, one column each, boxes and arrows as server-side SVG (readable without
JavaScript, printable, nothing to load)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from tunesmith.registry.records import VersionDetail, iso

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 48, 14, 10
MAX_PER_COLUMN = 6  # more than this: the rest is one "+ n more" box


@dataclass(frozen=True, slots=True)
class Node:
    title: str
    detail: str
    kind: str  # css class: source | snapshot | run | version | eval-pass | eval-fail | move
    href: str | None = None
    key: str | None = None  # an eval's id
    parent: str | None = None  # a move: the eval its gate was judged by (None: from the version)


def columns(d: VersionDetail, base: str = "") -> list[list[Node]]:
    """The nodes of each column, left to right."""
    snap = d.snapshot
    sources = [Node(s.path.rsplit("/", 1)[-1], f"sha256 {s.sha256[:10]}", "source") for s in (snap.sources if snap else [])]
    snapshot = [Node(f"snapshot {snap.id[:10]}", f"kept {snap.counts.get('kept', '?')} of {snap.counts.get('read', '?')}",
                     "snapshot", f"{base}/data?snapshot={snap.id}")] if snap else []
    t = d.training
    run = [Node(f"run {t.run_key or '?'}", f"{d.version.method or '?'} · seed {t.seed}", "run",
                f"{base}/runs?model={d.version.id}")]
    version = [Node(f"version {d.version.id[:10]}", ", ".join(d.version.aliases) or "no alias", "version",
                    f"{base}/models/{d.version.id}")]
    evals = [Node(f"eval {e.eval_id[:10]}", (f"{e.headline.mean:.3f} " if e.headline and e.headline.mean is not None
                                              else "") + ("passed" if e.passed else "failed"),
                  "eval-pass" if e.passed else "eval-fail", f"{base}/evaluation?eval={e.eval_id}", key=e.eval_id)
             for evs in d.evals.values() for e in evs]
    moves = [Node(f"{m.action} @{m.alias}", f"#{m.seq} {(iso(m.at) or '')[:10]} {m.by}", "move",
                  parent=m.gate_eval if m.to_model == d.version.id else None)
             for m in d.alias_moves]
    return [c for c in (sources, snapshot, run, version, evals, moves) if c]


def _clip(nodes: list[Node]) -> list[Node]:
    if len(nodes) <= MAX_PER_COLUMN:
        return nodes
    return [*nodes[: MAX_PER_COLUMN - 1], Node(f"+ {len(nodes) - MAX_PER_COLUMN + 1} more", "", "more")]


def _sources(cols: list[list[Node]], pos: list[list[tuple[int, int]]], i: int, node: Node,
             version_col: int) -> list[tuple[int, int, bool]]:
    """Where the arrows into ``node`` (column ``i``) start: every box of the column before, but
    an alias move starts at the eval its gate read (if shown), else at the version."""
    if node.kind != "move":
        return [(x, y, False) for x, y in pos[i - 1]]
    evals = [(n, xy) for n, xy in zip(cols[i - 1], pos[i - 1], strict=True) if n.key]
    gated = [xy for n, xy in evals if node.parent and n.key == node.parent]
    if gated:
        return [(*gated[0], False)]
    return [(x, y, i - 1 != version_col) for x, y in pos[version_col]]


def svg(d: VersionDetail, base: str = "") -> str:
    """The graph as an inline ``<svg>`` with a title and a description for screen readers."""
    cols = [_clip(c) for c in columns(d, base)]
    rows = max(len(c) for c in cols)
    version_col = next(i for i, c in enumerate(cols) if c and c[0].kind == "version")
    # room above the boxes for the arrows from the version that pass over the evals column
    lift = 24 if version_col < len(cols) - 2 and cols[-1][0].kind == "move" else 0
    width = PAD * 2 + len(cols) * BOX_W + (len(cols) - 1) * GAP_X
    height = lift + PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y
    pos: list[list[tuple[int, int]]] = []
    for i, col in enumerate(cols):
        top = lift + PAD + (height - lift - 2 * PAD - (len(col) * BOX_H + (len(col) - 1) * GAP_Y)) // 2
        pos.append([(PAD + i * (BOX_W + GAP_X), top + j * (BOX_H + GAP_Y)) for j in range(len(col))])
    parts = [f'<svg class="lineage" role="img" aria-labelledby="lin-t lin-d" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<title id="lin-t">Lineage of version ' + escape(d.version.id) + '</title>',
             '<desc id="lin-d">' + escape(" → ".join(", ".join(n.title for n in c) for c in cols)) + '</desc>',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>']
    for i in range(1, len(cols)):
        for node, (x1, y1) in zip(cols[i], pos[i], strict=True):
            for x0, y0, over in _sources(cols, pos, i, node, version_col):
                # an arrow from the version to an alias move runs along a line above the evals
                above = pos[i - 1][0][1] - 16
                bend = f" L {x0 + BOX_W + GAP_X // 2} {above} L {x1 - GAP_X // 2} {above}" if over else ""
                parts.append(f'<path class="edge" d="M {x0 + BOX_W} {y0 + BOX_H // 2}{bend} L {x1 - 2} '
                             f'{y1 + BOX_H // 2}" fill="none" marker-end="url(#arrow)"/>')
    for col, places in zip(cols, pos, strict=True):
        for node, (x, y) in zip(col, places, strict=True):
            box = (f'<g class="node {node.kind}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
                   f'<text x="{x + 8}" y="{y + 18}" class="t">{escape(node.title[:24])}</text>'
                   f'<text x="{x + 8}" y="{y + 36}" class="d">{escape(node.detail[:28])}</text></g>')
            parts.append(f'<a href="{escape(node.href)}">{box}</a>' if node.href else box)
    parts.append("</svg>")
    return "".join(parts)
