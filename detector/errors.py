"""Errors raised for bad user input (config files, dataset files, command-line overrides)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value is wrong.

    The message always names where the value came from (``file``, and ``line`` when known), the dotted
    key path (``loss.box.name``) and what would be valid.
    """

    def __init__(self, key: str, message: str, file: str | None = None, line: int | None = None):
        self.key, self.file, self.line, self.detail = key, file, line, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


class DatasetError(ValueError):
    """A dataset file (dataset YAML, annotation JSON, label txt or VOC XML) is wrong; names the file and line."""
