"""Model providers: one adapter per wire protocol, all behind ``ModelProvider``."""
