"""Every public function and method in nano/ carries type hints (mypy checks them in the test
command: scripts/test.sh)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "nano"


def unannotated(source: str) -> list[str]:
    """Public module-level functions and methods missing a parameter or return annotation."""
    found = []
    tree = ast.parse(source)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        defs += [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    for fn in defs:
        if fn.name.startswith("_"):
            continue
        params = [a for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
                  if a.arg not in ("self", "cls")]
        params += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
        missing = [a.arg for a in params if a.annotation is None]
        if missing or fn.returns is None:
            found.append(f"{fn.name}:{fn.lineno} ({', '.join(missing) or 'return'})")
    return found


def test_public_functions_are_annotated():
    sources = sorted(ROOT.rglob("*.py"))
    assert len(sources) > 50
    found = [f"{p.relative_to(ROOT.parent)}: {f}" for p in sources
             for f in unannotated(p.read_text())]
    assert found == []


def test_the_check_sees_a_missing_hint():
    source = "class A:\n    def run(self, inputs) -> None: ...\n\ndef f(x: int): ...\n"
    assert sorted(unannotated(source)) == ["f:4 (return)", "run:2 (inputs)"]
