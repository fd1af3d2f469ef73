"""Pictures drawn on the server: a job's dependency graph and the throughput bars.

Both are laid out here as plain numbers; the templates write them as inline SVG with presentation
attributes and CSS classes only (the CSP allows no inline style), so they need no script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from passito_jobs.queue.admin import FlowNode, ThroughputBucket
from passito_jobs.queue.limits import printable

NODE_W, NODE_H = 212, 50
LABEL = 26  # characters of `#id Type` that fit a box
GAP_X, GAP_Y = 56, 18
PAD = 8


@dataclass(frozen=True)
class Box:
    id: int
    label: str
    state: str
    x: int
    y: int
    current: bool
    attempts: str


@dataclass(frozen=True)
class Edge:
    path: str
    state: str  # the parent's state: a completed parent's edge is drawn solid


@dataclass(frozen=True)
class Graph:
    boxes: list[Box]
    edges: list[Edge]
    width: int
    height: int
    node_w: int = NODE_W
    node_h: int = NODE_H


def flow_graph(nodes: Sequence[FlowNode], current: int) -> Graph | None:
    """Columns by depth (a job stands right of every parent it has in the graph)."""
    if len(nodes) < 2:
        return None
    by_id = {node.id: node for node in nodes}
    depth: dict[int, int] = {}
    for node in sorted(nodes, key=lambda n: n.id):  # a parent's id is lower than its child's
        parents = [p for p in node.depends_on if p in by_id]
        depth[node.id] = 1 + max((depth.get(p, 0) for p in parents), default=-1)
    columns: dict[int, list[FlowNode]] = {}
    for node in sorted(nodes, key=lambda n: n.id):
        columns.setdefault(depth[node.id], []).append(node)
    place: dict[int, tuple[int, int]] = {}
    for column, members in columns.items():
        for row, node in enumerate(members):
            place[node.id] = (PAD + column * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    boxes = [
        Box(
            id=node.id,
            label=printable(f"#{node.id} {node.type}", LABEL),
            state=node.state,
            x=place[node.id][0],
            y=place[node.id][1],
            current=node.id == current,
            attempts=f"{node.attempts}/{node.max_attempts}",
        )
        for node in nodes
    ]
    edges = []
    for node in nodes:
        for parent in node.depends_on:
            if parent not in place:
                continue
            (px, py), (cx, cy) = place[parent], place[node.id]
            x1, y1, x2, y2 = px + NODE_W, py + NODE_H // 2, cx, cy + NODE_H // 2
            bend = (x2 - x1) // 2
            edges.append(
                Edge(f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2 - 6},{y2}", by_id[parent].state)
            )
    width = PAD * 2 + (max(columns) + 1) * NODE_W + max(columns) * GAP_X
    height = PAD * 2 + max(len(m) for m in columns.values()) * (NODE_H + GAP_Y) - GAP_Y
    return Graph(boxes, edges, width, height)


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    peak: int
    total_completed: int
    total_failed: int
    first: str
    last: str


CHART_W, CHART_H = 600, 110


def throughput_chart(
    buckets: Sequence[ThroughputBucket], *, now: datetime, span: timedelta, step: timedelta, label: str
) -> Chart:
    """Stacked bars (completed under failed) for each step of the span ending now."""
    count = max(1, round(span / step))
    epoch = datetime(2000, 1, 1, tzinfo=now.tzinfo)
    last_start = epoch + ((now - epoch) // step) * step
    starts = [last_start - step * (count - 1 - i) for i in range(count)]
    found = {b.bucket: b for b in buckets}
    peak = max((b.completed + b.failed for b in buckets), default=0)
    scale = (CHART_H - 4) / peak if peak else 0.0
    slot = CHART_W / count
    bars = []
    for index, start in enumerate(starts):
        bucket = found.get(start)
        completed, failed = (bucket.completed, bucket.failed) if bucket else (0, 0)
        completed_h, failed_h = completed * scale, failed * scale
        bars.append(
            Bar(
                x=round(index * slot + 1, 2),
                width=round(max(1.0, slot - 2), 2),
                completed_y=round(CHART_H - completed_h, 2),
                completed_h=round(completed_h, 2),
                failed_y=round(CHART_H - completed_h - failed_h, 2),
                failed_h=round(failed_h, 2),
                title=f"{start:%H:%M} UTC {label}: {completed} completed, {failed} failed",
            )
        )
    return Chart(
        bars=bars,
        width=CHART_W,
        height=CHART_H,
        peak=peak,
        total_completed=sum(b.completed for b in buckets),
        total_failed=sum(b.failed for b in buckets),
        first=f"{starts[0]:%a %H:%M}" if span > timedelta(hours=12) else f"{starts[0]:%H:%M}",
        last=f"{starts[-1] + step:%a %H:%M}" if span > timedelta(hours=12) else f"{starts[-1] + step:%H:%M}",
    )
