"""The README documents every feature exactly as the code defines it."""

from pathlib import Path

from fraudloop.features.compute import feature_table_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_feature_table_in_readme_is_current():
    text = README.read_text()
    start = text.index("<!-- features-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /features-table -->")
    assert text[start:end].strip() == feature_table_markdown().strip(), (
        "README's feature table is stale: paste fraudloop.features.compute.feature_table_markdown()"
    )
