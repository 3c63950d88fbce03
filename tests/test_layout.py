"""The layout is a contract: the core is Dagster-free and layered by stage, serving ships only
what it imports, and every package says what it is for.

The import graph is read from the source (every import, at module level or inside a function),
so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

from fraudloop.delivery.package import SERVING_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "fraudloop"
#: each stage may import its own package and the ones before it (serving and monitoring are
#: peers at the end: neither imports the other)
STAGES = ("core", "feeds", "data", "features", "model", "delivery", "serving", "monitoring")
RANK = {stage: min(i, 6) for i, stage in enumerate(STAGES)}
TOP_LEVEL = ("fraudloop", "fraudloop_instance", "pipelines", "assets", "resources", "sensors")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every module `module` imports (absolute names), wherever the import statement is."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from fraudloop.model import training` imports the submodule
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def project_modules(package: str) -> list[str]:
    return sorted(module_name(p) for p in (ROOT / package).rglob("*.py"))


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def closure(module: str) -> set[str]:
    """`module` and every fraudloop module it reaches through imports."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [m for m in imports_of(current) if m.startswith("fraudloop") and is_module(m)]
    return seen


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_no_core_module_imports_dagster():
    offenders = {
        module: sorted(m for m in imports_of(module) if m.split(".")[0].startswith("dagster"))
        for module in project_modules("fraudloop")
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_instance_plugins_import_dagster_only():
    """The instance image (webserver, daemon) copies fraudloop_instance without the project."""
    reached = {m for module in project_modules("fraudloop_instance") for m in imports_of(module)}
    third_party = {m for m in reached if m.split(".")[0] not in sys.stdlib_module_names}
    allowed = ("dagster", "fraudloop_instance", "__future__")
    assert sorted(m for m in third_party if not m.startswith(allowed)) == []


def test_every_core_module_belongs_to_a_stage_package():
    loose = [m for m in project_modules("fraudloop") if m != "fraudloop" and not stage_of(m)]
    assert loose == [], "every core module lives in one of the stage packages"


def test_stages_import_only_themselves_and_earlier_stages():
    upward = []
    for module in project_modules("fraudloop"):
        own = stage_of(module)
        for imported in imports_of(module):
            other = stage_of(imported)
            if own and other and other != own and RANK[other] >= RANK[own]:
                upward.append(f"{module} -> {imported}")
    assert upward == []


@pytest.mark.parametrize("package", ["serving", "delivery"])
def test_serving_and_delivery_reach_nothing_of_feeds_or_data(package):
    reached = set().union(*(closure(m) for m in project_modules(f"fraudloop/{package}")))
    assert sorted(m for m in reached if stage_of(m) in ("feeds", "data")) == []


def test_the_serving_image_holds_everything_serving_imports():
    """The scoring image copies SERVING_PACKAGES only (fraudloop.delivery.package): everything
    the service reaches must be inside them, and monitoring, feeds and data must not be."""
    reached = closure("fraudloop.serving.__main__") | closure("fraudloop.serving.app")
    outside = sorted(m for m in reached if stage_of(m) and stage_of(m) not in SERVING_PACKAGES)
    assert outside == []
    assert set(SERVING_PACKAGES) <= set(STAGES)
    assert not {"feeds", "data", "monitoring"} & set(SERVING_PACKAGES)


@pytest.mark.parametrize(
    "package",
    [*TOP_LEVEL, *(f"fraudloop/{stage}" for stage in STAGES)],
)
def test_every_package_says_what_it_is_for(package):
    init = ROOT / package / "__init__.py"
    assert init.exists(), f"{package} is not a package"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc.strip().splitlines()) >= 2, f"{package}/__init__.py needs a two-line docstring"


def test_every_stage_keeps_its_settings_in_its_policy_module():
    """Where a setting lives can be found from the tree: `<stage>/policy.py` for a stage's own,
    `core/settings.py` for the deployment's, `serving/config.py` for the service's."""
    from fraudloop.core.settings import declared
    from pipelines.config import SETTINGS_CLASSES

    homes = {cls.__module__ for cls in SETTINGS_CLASSES if declared(cls)}
    allowed = {"fraudloop.core.settings", "fraudloop.serving.config"}
    allowed |= {f"fraudloop.{stage}.policy" for stage in STAGES}
    assert homes <= allowed, homes - allowed
