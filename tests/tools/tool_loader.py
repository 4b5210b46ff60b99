"""The tools are scripts, not a package: tests load ``tools/<name>.py`` from its file (tests/tools is on sys.path
under pytest's default import mode, as tests/engine is for its helpers)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str):
    """The module of ``tools/<name>.py``, freshly executed."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
