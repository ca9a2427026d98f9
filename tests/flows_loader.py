"""Load a flow script (flows/NAME.py) as a module, so tests call its main() in-process."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_flow(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_flow", ROOT / "flows" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
