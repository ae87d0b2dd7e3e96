import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FLATNB = [sys.executable, '-m', 'flatnb']

def flatnb(*args, cwd=None, timeout=600, **kw):
    "Run the `flatnb` command in a subprocess; return the CompletedProcess"
    return subprocess.run([*FLATNB, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, **kw)

@pytest.fixture
def run_flatnb(): return flatnb
