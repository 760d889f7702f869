"""OpenTelemetry tracing and metrics for an engine (the `tukio[otel]` extra).

`instrument(engine)` adds a listener to the engine (see `Engine.add_listener`):
a span per execution and per task attempt, and metrics. It uses the tracer
and meter providers it is given, else the global ones (`opentelemetry.trace.
get_tracer_provider()`...); it never sets the global providers. An engine
that is not instrumented pays nothing: no listener is called, and
``import tukio`` does not import OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tukio.errors import TukioError
from tukio.telemetry._prometheus import prometheus_text

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from tukio.engine import Engine
    from tukio.telemetry._listener import TelemetryListener

__all__ = ["Instrumentation", "instrument", "prometheus_text"]

#: The instrumentation scope of tukio's spans and metrics.
SCOPE = "tukio"


class Instrumentation:
    """An engine's OpenTelemetry listener, as `instrument` returns it.

    Args:
        engine: the instrumented engine.
        listener: the listener added to it.
    """

    __slots__ = ("engine", "listener")

    def __init__(self, engine: Engine, listener: TelemetryListener) -> None:
        self.engine = engine
        self.listener = listener

    def uninstrument(self) -> None:
        """Remove the listener: workflows started from now on make no spans or metrics.

        Raises:
            ValueError: it was already removed.
        """
        self.engine.remove_listener(self.listener)


def instrument(
    engine: Engine, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> Instrumentation:
    """Trace and measure the workflows `engine` starts from now on.

    Args:
        engine: the engine to instrument.
        tracer_provider: makes the tracer (the global provider when None).
        meter_provider: makes the meter (the global provider when None).

    Returns:
        What removes the instrumentation (`Instrumentation.uninstrument`).

    Raises:
        TukioError: OpenTelemetry is not installed (``pip install tukio[otel]``).
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise TukioError("tukio.telemetry needs OpenTelemetry: pip install 'tukio[otel]'") from exc
    from tukio import __version__
    from tukio.telemetry._listener import TelemetryListener

    tracers = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    meters = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    listener = TelemetryListener(
        tracers.get_tracer(SCOPE, __version__), meters.get_meter(SCOPE, __version__), engine.node
    )
    engine.add_listener(listener)
    return Instrumentation(engine, listener)
