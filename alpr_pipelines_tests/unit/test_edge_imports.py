import subprocess
import sys

HEAVY = ("torch", "ultralytics", "dagster", "mlflow", "pandas")


def test_no_edge_module_imports_the_training_stack():
    """Every module of the edge package, found by walking it (a new one is covered without touching this test), imports
    no torch, ultralytics, dagster, mlflow or pandas: an edge box installs only what inference needs."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import alpr_pipelines.edge as edge\n"
        "names = [m.name for m in pkgutil.walk_packages(edge.__path__, 'alpr_pipelines.edge.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(len(names), bad)\n"
        "sys.exit(1 if bad or len(names) < 15 else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"edge imported: {out.stdout} {out.stderr[-2000:]}"


def test_the_prefetch_child_imports_no_opencv():
    """The child that prepares new versions starts lean: the loader, ONNX Runtime and the box optimization only."""
    code = (
        "import sys\n"
        "import alpr_pipelines.edge.swap.prefetch, alpr_pipelines.edge.loader\n"
        "import alpr_pipelines.edge.backends.box_optimized\n"
        "sys.exit(1 if 'cv2' in sys.modules else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_edge_cli_path_imports_no_training_stack():
    code = (
        "import sys\n"
        "from alpr_pipelines import cli\n"
        "cli.build_parser()\n"
        "import alpr_pipelines.edge.service\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'dagster'))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
