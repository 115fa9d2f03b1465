import os

# Tests never touch the network: set before anything imports huggingface_hub (timm does).
os.environ['HF_HUB_OFFLINE'] = '1'

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402

# Suites that run in a process of their own: timm's (tests/test_timm_peer.py), as it patches timm globally,
# and the Triton kernels' (tests/test_ops.py), as TRITON_INTERPRET must be set before Triton loads.
collect_ignore = ['timm_peer', 'triton_suite']

OFFICIAL_DIR = Path(__file__).parent / 'data' / 'official'


@pytest.fixture(scope='session')
def official_dir() -> Path:
    return OFFICIAL_DIR


@pytest.fixture(scope='session')
def tiny_ref_config() -> dict:
    return json.loads((OFFICIAL_DIR / 'smpconv_tiny_ref_config.json').read_text())


@pytest.fixture
def without_compiler(monkeypatch) -> Callable[[ModuleType], None]:
    """Gives a module's C++ extension (its `EXTENSION`) as not yet built, its build failing as it does where no
    compiler is found."""
    def no_compiler():
        raise OSError('no C++ compiler found\nmore detail')

    def install(module: ModuleType) -> None:
        from smpconv_models.ops.native import NativeExtension
        built = module.EXTENSION
        extension = NativeExtension(built.name, built.source.name, built.what)
        monkeypatch.setattr(extension, 'build', no_compiler)
        monkeypatch.setattr(module, 'EXTENSION', extension)
    return install
