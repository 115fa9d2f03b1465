"""torch.hub entry points for the SMPConv models (and only them): one per registered model, generated from timm's
registry with the paper's accuracy in its docstring, and `smpconv` for any of them by name:

    torch.hub.load('<owner>/smpconv-models', 'smpconv_t', pretrained=True)
    torch.hub.load('<owner>/smpconv-models', 'smpconv', model_name='hf-hub:smpconv-models/smpconv_t.in1k')
"""
dependencies = ['torch', 'timm', 'safetensors', 'huggingface_hub']

# torch.hub lists every public callable of this module as an entry point: the imports stay private
import timm as _timm  # noqa: E402

from smpconv_models.factory import create_model as _create_model  # noqa: E402  (registers the models with timm)
from smpconv_models.models import PAPER_RESULTS as _PAPER_RESULTS  # noqa: E402


def smpconv(model_name: str, pretrained: bool = False, **kwargs):
    """Any SMPConv model by its timm name (with a tag: 'smpconv_t.in1k'), an 'hf-hub:' repo or a 'local-dir:'
    export of one."""
    model = _create_model(model_name, pretrained=pretrained, **kwargs)
    architecture = model.pretrained_cfg.get('architecture', '')
    if not architecture.startswith('smpconv'):
        raise ValueError(f"{model_name!r} holds a {architecture!r} model: this hub serves smpconv_* models only")
    return model


def _docstring(model_name: str) -> str:
    """The registered model's own docstring, its accuracy in the paper and where pretrained=True loads from."""
    summary = _timm.models.model_entrypoint(model_name).__doc__.strip()
    paper = f' Paper: {_PAPER_RESULTS[model_name]}.' if model_name in _PAPER_RESULTS else ''
    hub_id = _timm.models.get_pretrained_cfg_value(model_name, 'hf_hub_id')
    weights = f"the authors' weights, from {hub_id}" if hub_id else 'no published weights'
    return f'{summary}{paper} pretrained=True: {weights}.'


def _entry_point(model_name: str):
    def create(pretrained: bool = False, **kwargs):
        return _create_model(model_name, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = model_name
    create.__doc__ = _docstring(model_name)
    return create


globals().update({name: _entry_point(name) for name in _timm.list_models('smpconv*')})
