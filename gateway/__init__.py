"""gateway: an authenticating reverse proxy that puts GitHub identity in front of internal HTTP services."""

__version__ = "0.1.0"
