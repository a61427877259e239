"""The package version, defined once: ``pyproject.toml`` reads it for the build, the package re-exports it."""

__version__ = "0.1.0"
