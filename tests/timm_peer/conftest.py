"""Restricts timm's own model test suite to the SMPConv image models (the TCNs take sequences, which timm's
image tests cannot feed).

Placed beside `tests/test_models.py` of the installed timm's source distribution (see
`tests/test_timm_peer.py`). That file builds its parametrize lists from `timm.list_models` at import
time, so the registry is narrowed here, before it is imported, and our module is admitted to the
`module=` allow-lists that enable the forward_intermediates tests.
"""
import fnmatch
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import timm  # noqa: E402
import smpconv_models  # noqa: E402,F401  registers the models

MODEL_FILTER = 'smpconv*'
MODEL_MODULES = ['smpconvnet', 'resnet_cifar']  # timm's registry names a model's module by its file name
_TIMM_MARKERS = ('base', 'forward', 'backward', 'cfg', 'cfg_nonstd', 'torchscript', 'features', 'fxforward',
                 'fxbackward')

_list_models = timm.list_models
_list_pretrained = timm.list_pretrained


def _is_image_model(name: str) -> bool:
    return timm.get_pretrained_cfg(name).input_size is not None


def _ours(names):
    return [name for name in names if fnmatch.fnmatch(name, MODEL_FILTER) and _is_image_model(name)]


def list_models(filter='', module='', *args, **kwargs):
    if module:
        module = [module, *MODEL_MODULES] if isinstance(module, str) else [*module, *MODEL_MODULES]
    return _ours(_list_models(filter, module, *args, **kwargs))


def list_pretrained(*args, **kwargs):
    return _ours(_list_pretrained(*args, **kwargs))


timm.list_models = list_models
timm.list_pretrained = list_pretrained


def pytest_configure(config):
    for marker in _TIMM_MARKERS:
        config.addinivalue_line('markers', f'{marker}: timm test-suite marker')


def pytest_collection_modifyitems(config, items):
    """Keep only the tests parametrized with one of our models (the rest name timm's own models)."""
    selected, deselected = [], []
    for item in items:
        params = getattr(item, 'callspec', None)
        model_name = params.params.get('model_name') if params else None
        ours = isinstance(model_name, str) and model_name in _ours([model_name])
        (selected if ours else deselected).append(item)
    config.hook.pytest_deselected(items=deselected)
    items[:] = selected
