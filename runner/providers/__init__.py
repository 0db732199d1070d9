"""Provider clients, keyed by provider name."""
