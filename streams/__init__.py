"""The log: the embedded broker, producing and consuming, topics and their catalog."""

from . import aiokafka_fixes

aiokafka_fixes.apply()
