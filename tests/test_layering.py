"""The folder tree is the pipeline: phases import downward only, no import cycles, small modules.

The allowed directions are the `[importlinter]` contracts in setup.cfg (checked by import-linter's
`lint-imports`); cycles and module sizes are checked here with grimp, import-linter's graph.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 420   # "a module under ~400 lines with one job"


def test_phases_import_downward_only():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    r = subprocess.run([exe, "--config", str(ROOT / "setup.cfg")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def _cycles(graph, modules):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop(); on.discard(x); comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _package_only(comp):
    """A package's __init__ re-exporting its own children is not a cycle between phases."""
    top = min(comp, key=len)
    return all(m == top or m.startswith(top + ".") for m in comp)


def test_no_import_cycles():
    graph = grimp.build_graph("shifter_tf", "edge_runtime", cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in ("shifter_tf", "edge_runtime")}
    cycles = [c for c in _cycles(graph, modules) if not _package_only(c)]
    assert cycles == []


def test_errors_is_a_leaf():
    graph = grimp.build_graph("shifter_tf", cache_dir=None)
    assert {m for m in graph.find_modules_directly_imported_by("shifter_tf.errors")
            if m.startswith("shifter_tf")} == set()


def test_modules_stay_small_and_tools_need_no_path_hacks():
    big = []
    for folder in ("shifter_tf", "edge_runtime", "tools"):
        for f in (ROOT / folder).rglob("*.py"):
            n = len(f.read_text().splitlines())
            if n > MAX_LINES:
                big.append(f"{f.relative_to(ROOT)}: {n} lines")
    assert big == []
    hacks = [str(f.relative_to(ROOT)) for f in (ROOT / "tools").rglob("*.py")
             if "sys.path.insert" in f.read_text()]
    assert hacks == []


def test_only_the_api_the_pipeline_the_cli_and_errors_at_the_top():
    top = sorted(f.stem for f in (ROOT / "shifter_tf").glob("*.py") if f.stem != "__init__")
    assert top == ["api", "cli", "errors", "pipeline"]


def test_public_api_is_lazy_and_every_name_resolves():
    """`import shifter_tf` loads no TensorFlow; each name of the public API then imports from
    the sub-package the table names, and unknown names are an AttributeError."""
    code = ("import sys, shifter_tf as s\n"
            "assert 'tensorflow' not in sys.modules, 'import shifter_tf loaded TensorFlow'\n"
            "missing = [n for n in s.__all__ if getattr(s, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert {'train_portfolio', 'prune', 'export_portfolio', 'Portfolio', 'image_folder',\n"
            "        'prune_structured', 'to_tf_keras', 'to_keras3', 'run_pai', 'load_config',\n"
            "        'Config'} <= set(dir(s))\n"
            "try:\n    s.no_such_name\nexcept AttributeError:\n    print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
