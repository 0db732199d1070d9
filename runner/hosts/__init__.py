"""seedbatch's built-in hosts, each one :class:`~runner.spec.ProviderSpec` registered through
the entry-point group ``seedbatch.providers`` exactly like an installed plugin (see
``pyproject.toml`` and docs/plugins.md). Each module ties a host's models, settings, client
(``runner/providers/<name>.py``) and emulator (``runner/emulator/<name>.py``) together; the
client and emulator are imported only when first used."""
