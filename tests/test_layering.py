"""The package's layers hold by themselves: commands/ (and main) -> stages/ -> the rest
(repository/, tools/, records, manifest, locking ...). No module imports one of a
higher layer, and only the stages that orchestrate others import another stage.

Read from the source with ast (imports inside functions included), nothing imported.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import envpipe_agent

PACKAGE = Path(envpipe_agent.__file__).parent
TOP = ("envpipe_agent.main", "envpipe_agent.__main__", "envpipe_agent.commands")
STAGES = "envpipe_agent.stages"
# Stages that drive other stages; every other stage is built from the layer below.
ORCHESTRATORS = {"run", "ondemand", "sandbox", "bluegreen"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    # The package itself only names its API, imported on use (its __version__ is read
    # by main and the commands), so it counts as the bottom layer.
    if any(module == top or module.startswith(top + ".") for top in TOP):
        return 2
    if module == STAGES or module.startswith(STAGES + "."):
        return 1
    return 0


def imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, module) for every envpipe_agent module ``path`` imports."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from envpipe_agent.stages import apply` imports a stage module too.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name == "envpipe_agent" or name.startswith("envpipe_agent."):
                yield node.lineno, name


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (PACKAGE.parent / relative).is_dir()


def test_no_module_imports_a_higher_layer_and_only_orchestrators_import_stages():
    problems: List[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in imports(path):
            if not is_module(imported) or imported == importer:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported}"
            if layer(imported) > layer(importer):
                problems.append(f"{where} (a higher layer)")
            elif (layer(importer) == layer(imported) == 1 and imported != STAGES
                  and importer.rsplit(".", 1)[-1] not in ORCHESTRATORS):
                problems.append(f"{where} (only {', '.join(sorted(ORCHESTRATORS))} drive other stages)")
    assert problems == []


def test_the_layering_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "workdir.py"
    module.write_text("def fetch():\n    from envpipe_agent.stages.verify import check_folder\n")
    assert list(imports(module)) == [(2, "envpipe_agent.stages.verify"),
                                     (2, "envpipe_agent.stages.verify.check_folder")]
    assert layer("envpipe_agent.stages.verify") > layer("envpipe_agent.workdir")
