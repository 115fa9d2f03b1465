"""torch.hub entry points for the SMPConv models (and only them), one per registered model:

    torch.hub.load('<owner>/smpconv-models', 'smpconv_t', pretrained=True)
    torch.hub.load('<owner>/smpconv-models', 'smpconv', model_name='hf-hub:smpconv-models/smpconv_t.in1k')
"""
dependencies = ['torch', 'timm', 'safetensors', 'huggingface_hub']


def _create(model_name: str, pretrained: bool, **kwargs):
    from smpconv_models.factory import create_model  # importing smpconv_models registers its models with timm
    return create_model(model_name, pretrained=pretrained, **kwargs)


def smpconv_nano(pretrained: bool = False, **kwargs):
    """SMPConv nano, 0.9M parameters: this package's small model for quick CPU runs (no published weights)."""
    return _create('smpconv_nano', pretrained, **kwargs)


def smpconv_t(pretrained: bool = False, **kwargs):
    """SMPConv-T, 26.7M parameters; pretrained: the authors' ImageNet-1k weights (82.5% top-1)."""
    return _create('smpconv_t', pretrained, **kwargs)


def smpconv_b(pretrained: bool = False, **kwargs):
    """SMPConv-B, 79.5M parameters; pretrained: the authors' ImageNet-1k weights (83.8% top-1)."""
    return _create('smpconv_b', pretrained, **kwargs)


def smpconv_mobile31(pretrained: bool = False, **kwargs):
    """SMPConv mobile with 31x31 first-stage kernels, 2.9M parameters (paper appendix B.1; no weights)."""
    return _create('smpconv_mobile31', pretrained, **kwargs)


def smpconv_mobile51(pretrained: bool = False, **kwargs):
    """SMPConv mobile with 51x51 first-stage kernels, 3.1M parameters (paper appendix B.1; no weights)."""
    return _create('smpconv_mobile51', pretrained, **kwargs)


def smpconv(model_name: str, pretrained: bool = False, **kwargs):
    """Any SMPConv model by its timm name (with a tag: 'smpconv_t.in1k'), an 'hf-hub:' repo or a 'local-dir:'
    export of one."""
    model = _create(model_name, pretrained, **kwargs)
    architecture = model.pretrained_cfg.get('architecture', '')
    if not architecture.startswith('smpconv'):
        raise ValueError(f"{model_name!r} holds a {architecture!r} model: this hub serves smpconv_* models only")
    return model


def smpconv_tcn_smnist(pretrained: bool = False, **kwargs):
    """The authors' TCN for sequential MNIST (784 steps), 371K parameters (paper: 99.75%)."""
    return _create('smpconv_tcn_smnist', pretrained, **kwargs)


def smpconv_tcn_pmnist(pretrained: bool = False, **kwargs):
    """The authors' TCN for permuted MNIST (784 steps), 371K parameters (paper: 99.10%)."""
    return _create('smpconv_tcn_pmnist', pretrained, **kwargs)


def smpconv_tcn_scifar10(pretrained: bool = False, **kwargs):
    """The authors' TCN for sequential CIFAR-10 (1024 steps), 373K parameters (paper: 84.86%)."""
    return _create('smpconv_tcn_scifar10', pretrained, **kwargs)


def smpconv_tcn_chartraj(pretrained: bool = False, **kwargs):
    """The authors' TCN for Character Trajectories (182 steps), 374K parameters (paper: 99.53%)."""
    return _create('smpconv_tcn_chartraj', pretrained, **kwargs)


def smpconv_tcn_speech_mfcc(pretrained: bool = False, **kwargs):
    """The authors' TCN for Speech Commands MFCCs (20 x 161), 392K parameters (paper: 97.71%)."""
    return _create('smpconv_tcn_speech_mfcc', pretrained, **kwargs)


def smpconv_tcn_speech_raw(pretrained: bool = False, **kwargs):
    """The authors' TCN for raw Speech Commands audio (16,000 steps), 371K parameters (paper: 94.95%)."""
    return _create('smpconv_tcn_speech_raw', pretrained, **kwargs)


def smpconv_resnet_cifar10(pretrained: bool = False, **kwargs):
    """The authors' CIFAR-10 ResNet with 33 x 33 kernels, 490K parameters (paper: 93.00%)."""
    return _create('smpconv_resnet_cifar10', pretrained, **kwargs)
