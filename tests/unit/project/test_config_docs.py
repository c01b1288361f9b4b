"""docs/configuration.md is generated (scripts/gen_config_docs.py) and must match the code.

Invariant: regenerating from the current settings and adapter modules gives the committed
file byte for byte; every `env.<type>("NAME")` read in settings appears in it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_docs", module)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date():
    generated = _generator().render()
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == generated, (
        "docs/configuration.md is out of date: run `python scripts/gen_config_docs.py`"
    )


def test_every_settings_env_read_is_documented():
    source = (ROOT / "asm_project" / "settings" / "base.py").read_text(encoding="utf-8")
    names = set(re.findall(r'env(?:\.\w+|_secret)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert names  # the pattern still matches the settings' style
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert {n for n in names if f"`{n}`" not in doc} == set()


def test_adapter_env_vars_are_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in ("ANTHROPIC_API_KEY", "ASM_CODEX_BIN", "ASM_WORKSPACE_ROOTS", "ASM_AMP_BIN"):
        assert f"`{name}`" in doc


def test_every_variable_has_a_meaning():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = [line.strip() for line in doc.splitlines() if line.startswith("| `")]
    assert rows
    cells = [re.split(r"(?<!\\)\|", row[1:-1]) for row in rows]
    blank = [c[0].strip() for c in cells if not c[-1].strip()]
    assert blank == [], "give these a comment in the code or scripts/gen_config_docs.py"
