"""Settings of every agentlog process, read from the environment (``AGENTLOG_*``).

One class for all roles, so local mode and the compose file use identical names. By
default Postgres and Redis are ``auto``: this machine's if they answer, else embedded ones
(``streams.embedded``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
TOOL_NETWORKS_SETTING = "AGENTLOG_TOOL_ALLOWED_NETWORKS"


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """The networks of a comma-separated CIDR list (``10.1.0.0/16,fd00::/8``); an entry
    that is not a network (host bits set included) is a ``ValueError`` naming it."""
    networks: list[IPNetwork] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ValueError(
                f"{TOOL_NETWORKS_SETTING}: {entry!r} is not a CIDR network: {exc}"
            ) from None
    return tuple(networks)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTLOG_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", description="prepended to every catalog topic name")
    topic_partitions: int = Field(default=3, ge=1, description="partitions per catalog topic")
    database_url: str = Field(
        default="auto",
        description="a PostgreSQL URL; embedded: the embedded server under data_dir; auto:"
        " the server at local_database_url if it answers, else the embedded one",
    )
    local_database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="where database_url=auto looks for a running Postgres first",
    )
    database_schema: str = Field(
        default="agentlog", description="the core read models; billing's are in <schema>_billing"
    )
    database_pool_size: int = Field(default=10, ge=1, description="gateway connections")
    database_pool_timeout_s: float = Field(
        default=2.0, gt=0, description="longest wait for a pooled connection before a 503"
    )
    redis_url: str = Field(
        default="auto",
        description="a Redis URL; embedded or auto: as database_url, with local_redis_url",
    )
    local_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="where redis_url=auto looks for a running Redis first",
    )
    data_dir: str = Field(
        default=".agentlog",
        description="local mode's data: the embedded Postgres's and Redis's (postgres/, redis/)",
    )
    qdrant_url: str = ":memory:"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, description="0: any free port")
    metrics_host: str = Field(
        default="127.0.0.1", description="where a worker role serves /metrics and its probes"
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        description="a worker role's /metrics, /healthz and /readyz (`agentlog up`"
        " serves them on the gateway's port); 0: any free port, printed at start",
    )
    max_message_bytes: int = 64 * 1024
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body the gateway reads"
    )
    max_json_depth: int = Field(default=32, ge=2, description="deepest nesting of a JSON body")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="time a client has to send a request's headers"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="time a client has to send a request's body"
    )
    write_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="longest the gateway waits for Kafka to acknowledge a record before"
        " it answers 503",
    )
    sse_streams_per_tenant: int = Field(
        default=20, ge=1, description="concurrent SSE streams of one tenant, per gateway"
    )
    turn_deadline_s: float = Field(
        default=600.0, gt=0, description="a turn that makes no progress for this long fails"
    )
    max_steps_per_turn: int = 8
    max_tool_calls_per_turn: int = 16
    history_max_messages: int = Field(
        default=100, ge=0, description="most messages of a session's past a turn sends"
    )
    tool_result_max_bytes: int = 16 * 1024
    tool_allowed_networks: str = Field(
        default="",
        description="CIDR networks tools may reach although not public (loopback, private"
        " ranges), comma-separated or a JSON list; empty: public addresses only",
    )

    @field_validator("tool_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """A JSON list is read as the list it is; every entry must be a network, or the
        process refuses to start (rather than fail later, in whichever role reads it)."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"{TOOL_NETWORKS_SETTING}: not a JSON list") from None
        if isinstance(value, list):
            if not all(isinstance(entry, str) for entry in value):
                raise ValueError(f"{TOOL_NETWORKS_SETTING}: a JSON list of strings")
            value = ",".join(value)
        if isinstance(value, str):
            parse_networks(value)
        return value

    model_timeout_s: float = 60.0
    metrics_models: str = Field(
        default="",
        description="models whose calls the workers' metrics name (as agents name them:"
        " openai:gpt-4o), comma-separated; the dev model and these, every other one is"
        " `other`, since agents' models are tenants' free strings",
    )
    model_max_retries: int = 3
    model_retry_backoff_s: float = Field(
        default=0.5, description="first backoff between model call attempts (doubles)"
    )
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = Field(default="", repr=False)
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: str = Field(default="", repr=False)
    secrets_key: str = Field(
        default="",
        repr=False,
        description="Fernet keys sealing tool secrets, comma-separated, newest first;"
        " empty: the key in secrets_key_file (created on first use)",
    )
    secrets_key_file: str = ".agentlog/secrets.key"
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0, description="longest graceful shutdown before a process exits"
    )
    consumer_session_timeout_ms: int = 10_000
    log_level: str = "INFO"
    trace_url: str = Field(
        default="",
        description="a trace's page, `{trace_id}` replaced (Jaeger:"
        " http://localhost:16686/trace/{trace_id}); the dashboard links turns to it",
    )

    @property
    def billing_schema(self) -> str:
        """The schema of the billing read models, beside the core ones."""
        return f"{self.database_schema}_billing"
