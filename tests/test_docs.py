"""The documentation says what the code does: generated tables are current and every link
between the README and docs/ resolves."""

import re
from pathlib import Path

import pytest

from fraudloop.features.compute import feature_table_markdown
from pipelines.config import configuration_markdown

ROOT = Path(__file__).resolve().parent.parent


def generated(path: Path, marker: str) -> str:
    text = path.read_text()
    start = text.index(f"<!-- {marker}")
    start = text.index("\n", start) + 1
    return text[start : text.index(f"<!-- /{marker} -->")].strip()


@pytest.mark.parametrize(
    ("document", "marker", "make"),
    [
        ("docs/features.md", "features-table", feature_table_markdown),
        ("docs/configuration.md", "configuration-table", configuration_markdown),
    ],
)
def test_generated_tables_are_current(document, marker, make):
    assert generated(ROOT / document, marker) == make().strip(), (
        f"{document} is stale: paste {make.__module__}.{make.__name__}() between the markers"
    )


def test_links_between_readme_and_docs_resolve():
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", document.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_readme_gives_the_two_commands_and_a_table_of_contents():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "## Contents" in text and "## Runbook" in text
    assert text.index("## Runbook") < len(text) // 3, "the runbook belongs near the top"
