"""The environment variables deployment files may give agentlog's processes: the fields of
``streams.settings.Settings``, and the OpenTelemetry SDK's own variables."""

from __future__ import annotations

from collections.abc import Iterable

from streams.settings import Settings

SETTINGS_VARIABLES = frozenset(f"AGENTLOG_{name.upper()}" for name in Settings.model_fields)

# Read by the OpenTelemetry SDK itself, as its specification names them. OTEL_SERVICE_NAME
# is not among them on purpose: each role names its own service (agentlog-<role>).
OTEL_VARIABLES = frozenset(
    {
        "OTEL_SDK_DISABLED",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_PROPAGATORS",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    }
)


def unknown_variables(names: Iterable[str]) -> list[str]:
    """The names, sorted, that neither agentlog's settings nor the OpenTelemetry SDK read."""
    return sorted(set(names) - SETTINGS_VARIABLES - OTEL_VARIABLES)


def settings_default(variable: str) -> object:
    """The default of the Settings field an ``AGENTLOG_*`` variable sets."""
    field = Settings.model_fields[variable.removeprefix("AGENTLOG_").lower()]
    return field.default
