"""drivestack: the schema shared by every component, config loading and the CLI."""

__version__ = "0.1.0"
