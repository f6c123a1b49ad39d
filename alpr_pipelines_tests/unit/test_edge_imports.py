import subprocess
import sys


def test_edge_package_imports_no_torch_ultralytics_or_dagster():
    code = (
        "import sys\n"
        "import alpr_pipelines.edge, alpr_pipelines.edge.onnx_backend, alpr_pipelines.edge.loader\n"
        "import alpr_pipelines.edge.detector, alpr_pipelines.edge.service, alpr_pipelines.edge.tensorrt_backend\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'dagster', 'mlflow'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"edge imported: {out.stdout} {out.stderr[-2000:]}"


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
