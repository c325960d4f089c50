"""docs/settings.md is generated from service/settings.py (scripts/settings_doc.py): it must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "settings_doc.py"


def load_script():
    spec = importlib.util.spec_from_file_location("settings_doc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_page_is_current() -> None:
    problem = load_script().check()
    assert problem is None, f"{problem}. Run `make docs` to regenerate docs/settings.md."


def test_every_setting_is_in_exactly_one_section() -> None:
    script = load_script()
    names = list(script.Settings.model_fields)
    sections = script.section_of_fields(names)
    listed = [name for fields in sections.values() for name in fields]
    assert sorted(listed) == sorted(names)
    with pytest.raises(script.SectionError, match="NEW_SETTING is in no section"):
        script.section_of_fields([*names, "new_setting"])


def test_check_reports_a_stale_page(tmp_path: Path) -> None:
    script = load_script()
    stale = tmp_path / "settings.md"
    stale.write_text(script.render() + "\nedited by hand\n")
    assert "make docs" in script.check(stale)
    assert "make docs" in script.check(tmp_path / "missing.md")
