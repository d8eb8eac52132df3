from __future__ import annotations

from pathlib import Path

from schemas.reference import config_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_matches_the_model() -> None:
    text = README.read_text()
    start = text.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == config_reference().strip(), "run: python -m schemas.reference"
