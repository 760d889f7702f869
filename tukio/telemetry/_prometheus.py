"""Prometheus text from the metrics an OpenTelemetry SDK reader collects (for ``/metrics``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["prometheus_text"]

_UNSAFE = re.compile(r"[^a-zA-Z0-9_:]")


def _name(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _labels(attributes: Mapping[str, Any] | None, **more: str) -> str:
    pairs = {_name(key): str(value) for key, value in (attributes or {}).items()} | more
    if not pairs:
        return ""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for value in pairs.values())
    return "{" + ",".join(f'{key}="{value}"' for key, value in zip(pairs, escaped, strict=True)) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _histogram(name: str, points: Iterable[Any]) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    for point in points:
        total = 0
        for bound, count in zip([*point.explicit_bounds, math.inf], point.bucket_counts, strict=True):
            total += count
            lines.append(f"{name}_bucket{_labels(point.attributes, le=_number(bound))} {total}")
        lines.append(f"{name}_sum{_labels(point.attributes)} {_number(point.sum)}")
        lines.append(f"{name}_count{_labels(point.attributes)} {point.count}")
    return lines


def prometheus_text(reader: Any) -> str:
    """Collect `reader` and return its metrics in Prometheus text format.

    Counters become ``NAME_total``, gauges and up-down counters ``NAME``,
    histograms ``NAME_bucket`` / ``NAME_sum`` / ``NAME_count``; dots in names
    and attribute keys become underscores.

    Args:
        reader: an OpenTelemetry SDK metric reader that can be collected on
            demand (``opentelemetry.sdk.metrics.export.InMemoryMetricReader``),
            one of the `MeterProvider` given to `instrument`.

    Returns:
        The text (empty when nothing was recorded).
    """
    data = reader.get_metrics_data()
    lines: list[str] = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                name = _name(metric.name)
                points = metric.data.data_points
                if hasattr(points[0] if points else None, "bucket_counts"):
                    lines += _histogram(name, points)
                    continue
                monotonic = getattr(metric.data, "is_monotonic", False)
                if monotonic:
                    name += "_total"
                if metric.description:
                    lines.append(f"# HELP {name} {metric.description}")
                lines.append(f"# TYPE {name} {'counter' if monotonic else 'gauge'}")
                lines += [f"{name}{_labels(point.attributes)} {_number(point.value)}" for point in points]
    return "\n".join(lines) + "\n" if lines else ""
