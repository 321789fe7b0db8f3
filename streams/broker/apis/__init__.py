"""The broker's Kafka API handlers, one module per subsystem.

Each handler is a plain ``async`` function of the shared ``ApiContext`` (settings and
broker state), the decoded request and the connection, returning the response as plain
values or None when none is due. Handlers hold no state of their own, so functions over
one context read better than classes. ``versions.APIS`` is the single table from API
key to handler and version range; dispatch and ApiVersions both answer from it.
"""

from .context import ApiContext, ApiSettings, Connection
from .versions import API_VERSIONS_KEY, APIS, Api, api_versions_body

__all__ = [
    "APIS",
    "API_VERSIONS_KEY",
    "Api",
    "ApiContext",
    "ApiSettings",
    "Connection",
    "api_versions_body",
]
