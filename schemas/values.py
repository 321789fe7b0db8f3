"""The values facts carry: an agent's config, a tool's definition, messages, tool calls
and token usage. The model providers speak in these same values."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# The models an agent may name: the dev model, or a provider and the provider's own name.
MODEL_PATTERN = r"^(dev(:.+)?|openai:.+|anthropic:.+)$"


class AgentConfig(_Value):
    name: str
    model: str
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list, description="allowlisted tool names")
    max_steps: int = 8
    max_tool_calls: int = 16


class ToolDefinition(_Value):
    """What a turn needs to know of a tool; secret headers are never in events."""

    tool_id: str
    name: str
    description: str = ""
    url: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    timeout_s: float = 10.0


class ToolCallValue(_Value):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class MessageValue(_Value):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCallValue] = Field(default_factory=list)
    tool_call_id: str | None = None


class UsageValue(_Value):
    """Tokens as the provider reports them; ``cached_input_tokens`` are the part of
    ``input_tokens`` the provider served from its prompt cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    def __add__(self, other: UsageValue) -> UsageValue:
        return UsageValue(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
        )
