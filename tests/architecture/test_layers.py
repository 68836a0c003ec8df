"""The layers' imports point one way: model, delivery, report, transforms, pipelines.

Every module of the package is parsed (its lazy imports inside functions too) and each
import of another beaconflow module must point to a lower layer or stay inside its own
subpackage. The layers without Beam, and the model without HTTP, are checked too. A new
arrow that points up fails here, naming the module, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import beaconflow

PACKAGE = Path(beaconflow.__file__).parent

#: Each subpackage's rank: a module may import beaconflow modules of lower rank only (and
#: of its own subpackage). The package root (``beaconflow``, its version) is below all.
RANKS = {
    "beaconflow.model": 0,
    "beaconflow.delivery": 1,
    "beaconflow.samples": 1,
    "beaconflow.report": 2,
    "beaconflow.client": 2,
    "beaconflow.sandbox": 2,
    "beaconflow.transforms": 3,
    "beaconflow.pipelines": 4,
    "beaconflow.command": 5,
    "beaconflow.__main__": 6,
}
#: Third-party packages a layer must not import.
FORBIDDEN = {
    "beaconflow.model": ("apache_beam", "aiohttp", "requests"),
    "beaconflow.delivery": ("apache_beam", "requests"),
    "beaconflow.samples": ("apache_beam", "aiohttp", "requests"),
    "beaconflow.report": ("apache_beam", "aiohttp", "requests"),
    "beaconflow.client": ("apache_beam", "aiohttp"),
    "beaconflow.sandbox": ("apache_beam", "requests"),
}
#: Imports allowed against the rules above, each with its reason.
EXCEPTIONS = {
    # a gs:// or s3:// ledger is reached through Beam's FileSystems; imported only then
    ("beaconflow.delivery.ledger", "apache_beam.io.filesystems"),
}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):  # rglob follows the symlinked subpackages
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(("beaconflow", *parts))] = path
    return modules


def _layer(module: str) -> str | None:
    for layer in RANKS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = module.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            # "from beaconflow.model import kontagent" imports the submodule too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_every_module_belongs_to_a_layer() -> None:
    strays = [m for m in _modules() if m != "beaconflow" and _layer(m) is None]
    assert strays == [], f"modules outside every layer (add them to a layer): {strays}"


def test_imports_point_down_only() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        layer = _layer(module)
        if layer is None:
            continue
        for line, imported in _imports(module, path):
            if not imported.startswith("beaconflow.") or imported not in modules:
                continue
            target = _layer(imported)
            if target is None or target == layer:
                continue
            if RANKS[target] >= RANKS[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {layer} imports {imported}")
    assert wrong == [], "imports that point up or sideways:\n" + "\n".join(wrong)


def test_layers_keep_out_of_beam_and_http() -> None:
    wrong = []
    for module, path in _modules().items():
        forbidden = FORBIDDEN.get(_layer(module) or "", ())
        for line, imported in _imports(module, path):
            top = imported.split(".")[0]
            excepted = any(
                module == who and (imported == what or imported.startswith(what + "."))
                for who, what in EXCEPTIONS
            )
            if top in forbidden and not excepted:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: imports {imported}")
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_an_arrow_that_points_up(tmp_path: Path) -> None:
    # the walker itself: an upward import in a model module is found
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from beaconflow.transforms.send import SendMessages\n")
    assert (2, "beaconflow.transforms.send.SendMessages") in _imports("beaconflow.model.bad", path)
