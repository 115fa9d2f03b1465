"""The authors' sequence and CIFAR-10 models: exact on the reference data made with their code, the named
configurations, any input length; their long convolutions against float64 definitions."""
import copy
import json
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import smpconv_models
from smpconv_models import CKConv, causal_conv1d, conv2d_same, from_official_ckconv
from smpconv_models.ops import choices, clear_choices, ffts, restore_choices, use_backend
from smpconv_models.ops import conv as long_convolution
from smpconv_models.ops.conv import CONV_BACKENDS, TRANSPOSE_CHUNK_ROWS

DATA = Path(__file__).parent / 'data' / 'official_seq'
CASES = ['tcn_smnist_tiny', 'tcn_chartraj_tiny', 'resnet_cifar10_tiny']
BACKENDS = list(CONV_BACKENDS)
# those that run 2-D inputs (the C++ direct convolution is 1-D)
BACKENDS_2D = [name for name, backend in CONV_BACKENDS.items() if backend.supports(torch.zeros(1, 1, 1, 1))]


pytestmark = pytest.mark.usefixtures('fresh_choices')


def official_constructor(case: str) -> dict:
    constructor = json.loads((DATA / f'{case}_config.json').read_text())['constructor']
    return dict(in_channels=constructor['in_channels'], out_channels=constructor['out_channels'],
                net=constructor['net_config'], kernel=constructor['kernel_config'], conv=constructor['conv_config'])


def our_module(official_path: str) -> str:
    """The module of ours that computes what an official module path does."""
    path = official_path.replace('backbone.', 'blocks.')
    return 'stem.large' if path == 'cconv1' else path.replace('.cconv1', '.conv1.large').replace('.cconv2',
                                                                                                 '.conv2.large')


@pytest.fixture(scope='module', params=CASES)
def case(request):
    model = from_official_ckconv(DATA / f'{request.param}_weights.safetensors', **official_constructor(request.param))
    return request.param, model.eval(), load_file(DATA / f'{request.param}_io.safetensors')


@torch.no_grad()
def test_logits_kernels_and_blocks_match_official(case):
    name, model, reference = case
    x = reference['input']
    logits = model(x)
    # float32, |logits| < 5: the same sums in another order (FFT or direct, another BLAS) differ by ~1e-6
    torch.testing.assert_close(logits, reference['logits'], rtol=0, atol=1e-5)
    other_path = next(k for k in reference if k in ('logits_fft', 'logits_direct'))
    torch.testing.assert_close(logits, reference[other_path], rtol=0, atol=1e-5)
    _, blocks = model.forward_intermediates(x)
    for i, block in enumerate(blocks):
        key = f"act.{'backbone' if 'tcn' in name else 'blocks'}.{i}"
        torch.testing.assert_close(block, reference[key], rtol=0, atol=1e-5)
    kernels = {k[len('kernel.'):]: v for k, v in reference.items() if k.startswith('kernel.')}
    assert len(kernels) == (5 if 'resnet' in name else 4)
    for path, expected in kernels.items():
        # |K| < 1, float32 eps 6e-8: the same products and sums
        torch.testing.assert_close(model.get_submodule(our_module(path)).kernel(), expected, rtol=0, atol=1e-6)


def test_train_mode_logits_match_official(case):
    """Batch statistics, one forward of a copy: the float32 tolerance of the issue, 1e-4."""
    name, model, reference = case
    trained = copy.deepcopy(model).train()
    with torch.no_grad():
        torch.testing.assert_close(trained(reference['input']), reference['logits_train'], rtol=0, atol=1e-4)


@pytest.mark.parametrize('name, params', [
    ('smpconv_tcn_smnist', 370_960), ('smpconv_tcn_pmnist', 370_960), ('smpconv_tcn_scifar10', 373_480),
    ('smpconv_tcn_chartraj', 373_790), ('smpconv_tcn_speech_mfcc', 391_840), ('smpconv_tcn_speech_raw', 370_960),
    ('smpconv_resnet_cifar10', 489_646),
])
def test_named_configurations_have_the_authors_parameter_counts(name, params):
    model = timm.create_model(name, device='meta')
    assert sum(p.numel() for p in model.parameters()) == params


def test_configurations_are_the_authors_commands():
    """The authors' smp/README.md commands, through from_official_ckconv's translation, build our named models."""
    tcn = dict(type='TCN', no_hidden=30, no_blocks=6, dropout=0., norm='BatchNorm', nonlinearity='ReLU',
               block_width_factors=[0.])
    conv = dict(type='CKConv', use_fft=True, bias=False, horizon='same', small_kernel_size=5)
    kernel = dict(dim_linear=1, n_points=30, radius=0.002, coord_std=0.1)
    commands = {
        'smpconv_tcn_smnist': (1, 10, 784, {}, {}, {}),
        'smpconv_tcn_scifar10': (3, 10, 1024, {}, {}, dict(bias=True)),
        'smpconv_tcn_chartraj': (3, 20, 182, {}, dict(radius=0.012), dict(bias=True, use_fft=False)),
        'smpconv_tcn_speech_mfcc': (20, 10, 161, dict(dropout=0.2), dict(radius=0.012), dict(bias=True)),
        'smpconv_tcn_speech_raw': (1, 10, 16000, dict(dropout=0.1), dict(radius=0.0002), {}),
    }
    from smpconv_models.official import official_ckconv_model_args
    for name, (channels, classes, length, net_args, kernel_args, conv_args) in commands.items():
        _, args = official_ckconv_model_args(channels, classes, {**tcn, **net_args}, {**kernel, **kernel_args},
                                             {**conv, **conv_args}, sequence_length=length)
        ours = timm.create_model(name, device='meta')
        theirs = smpconv_models.SMPConvTCN(**args, device='meta')
        assert str(ours) == str(theirs), name
    resnet = dict(type='ResNet', no_hidden=24, no_blocks=7, dropout=0.1, norm='BatchNorm', nonlinearity='ReLU',
                  block_width_factors=[1.0, 2, 1.5, 3, 2.0, 2])
    _, args = official_ckconv_model_args(3, 10, resnet, dict(dim_linear=2, n_points=16, radius=0.12, coord_std=0.05),
                                         dict(type='CKConv', horizon=33, small_kernel_size=3))
    assert str(smpconv_models.SMPConvResNet(**args, device='meta')) == \
        str(timm.create_model('smpconv_resnet_cifar10', device='meta'))


def test_official_configs_that_do_not_fit_are_named():
    constructor = official_constructor('tcn_smnist_tiny')
    weights = load_file(DATA / 'tcn_smnist_tiny_weights.safetensors')
    with pytest.raises(ValueError, match=r"net has keys the authors' config does not: no_hiden"):
        from_official_ckconv(weights, **{**constructor, 'net': {**constructor['net'], 'no_hiden': 8}})
    with pytest.raises(ValueError, match='conv.horizon must be odd'):
        from_official_ckconv(weights, **{**constructor, 'conv': {**constructor['conv'], 'horizon': 32}})
    with pytest.raises(ValueError, match="only 'CKConv' builds one"):
        from_official_ckconv(weights, **{**constructor, 'conv': {**constructor['conv'], 'type': 'Conv'}})
    unrun = {k: v * 0 if k.endswith('train_length') else v for k, v in weights.items()}
    with pytest.raises(ValueError, match="conv.horizon='same' takes the kernel length .* pass sequence_length"):
        from_official_ckconv(unrun, **constructor)
    assert from_official_ckconv(unrun, sequence_length=64, **constructor).blocks[0].conv1.large.kernel().shape[-1] == 64
    with pytest.raises(ValueError, match=r'does not fit the model: shapes that differ .*blocks\.0\.conv1\.large_norm'):
        from_official_ckconv(weights, **{**constructor, 'net': {**constructor['net'], 'no_hidden': 6}})
    with pytest.raises(ValueError, match='not an official SMPConv sequence or CIFAR-10 state dict'):
        from_official_ckconv(timm.create_model('smpconv_tcn_smnist').state_dict(), **constructor)


@pytest.mark.parametrize('length', [20, 63, 64, 100])
def test_a_tcn_runs_on_any_length_and_is_causal(length):
    """Kernels of 64 taps: cropped for shorter sequences, sliding over longer ones; no step sees the future."""
    torch.manual_seed(0)
    model = timm.create_model('smpconv_tcn_smnist', kernel_size=64, depth=2, width=8).eval()
    x = torch.randn(2, 1, length)
    changed = x.clone()
    changed[:, :, length // 2:] += 1.
    with torch.no_grad():
        full, early = model.forward_features(x), model.forward_features(changed)
    assert full.shape == (2, 8, length)
    torch.testing.assert_close(early[..., :length // 2], full[..., :length // 2], rtol=0, atol=1e-6)
    assert not torch.allclose(early[..., length // 2:], full[..., length // 2:])


@pytest.mark.parametrize('size', [(32, 32), (16, 16), (40, 24), (7, 9)])
def test_the_resnet_runs_on_any_image_size(size):
    model = timm.create_model('smpconv_resnet_cifar10', depth=2, width=8, width_factors=(1, 2)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 10)
        assert model(torch.randn(1, 3, *size)).shape == (1, 10)  # the authors' squeeze() gave [10]


# ---- the long convolutions ----------------------------------------------------------------------------------

def causal_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The definition, in float64: y[t] = sum_l w[L - 1 - l] x[t - l]."""
    return F.conv1d(F.pad(x.double(), (weight.shape[-1] - 1, 0)), weight.double())


def authors_causal_fftconv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The authors' causal_fftconv as their architecture notes describe it: an even kernel gets a leading zero, x
    is left-padded to M = N + L' - 1, and irfft is called without n."""
    if weight.shape[-1] % 2 == 0:
        weight = F.pad(weight, (1, 0))
    length = x.shape[-1]
    x = F.pad(x, (weight.shape[-1] - 1, 0))
    spectrum_x, spectrum_w = torch.fft.rfft(x), torch.fft.rfft(F.pad(weight, (0, x.shape[-1] - weight.shape[-1])))
    return torch.fft.irfft(torch.einsum('bi...,oi...->bo...', spectrum_x, spectrum_w.conj()))[..., :length]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('length', [1, 7, 8, 63, 64, 161])
@pytest.mark.parametrize('taps', [1, 5, 'same', 'longer'])
def test_causal_convolution_is_exact_for_every_length(backend, length, taps):
    taps = {'same': length, 'longer': 2 * length + 3}.get(taps, taps)
    generator = torch.Generator().manual_seed(length * 100 + taps)
    x = torch.randn(2, 3, length, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, 3, taps, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=generator)
    with use_backend(backend):
        y = causal_conv1d(x, weight, bias)
        grads = torch.autograd.grad(y.square().sum(), (x, weight))
    expected = causal_reference(x, weight) + bias[:, None]
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, weight))
    # float64: rounding of sums of at most a few hundred products of O(1) numbers
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize('x_size, taps, pad', [((1,), (5,), (4,)), ((63,), (40,), (39,)), ((161,), (400,), (399,)),
                                              ((9, 11), (7, 5), (3, 2)), ((32, 32), (9, 9), (4, 4)),
                                              ((16, 16), (33, 33), (16, 16)), ((12, 7), (5, 6), (0, 5))])
def test_a_float32_training_step_on_the_fft_is_the_definition(x_size, taps, pad):
    """In float32 the spectra's products run on the C++ extension where it builds (`spectral_cpu`), and a small
    2-D box's transforms are DFT matrix products: a training step's output and gradients against the float64
    definition, for 1-D and 2-D kernels, boxes and kernels longer than x."""
    generator = torch.Generator().manual_seed(sum(x_size + taps))
    x = torch.randn(3, 5, *x_size, generator=generator, requires_grad=True)
    weight = torch.randn(7, 5, *taps, generator=generator, requires_grad=True)
    with use_backend('fft'):
        y = long_convolution.conv_taps(x, weight, pad)
        grads = torch.autograd.grad(y.square().sum(), (x, weight))
    padding = long_convolution._paddings(taps, pad)
    expected = F.conv1d(F.pad(x.double(), padding), weight.double()) if len(taps) == 1 else \
        F.conv2d(F.pad(x.double(), padding), weight.double())
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, weight))
    # float32 FFTs over periods of a few thousand values at most: errors ~1e-6 of the sums' scale, which is at most
    # sqrt(5 taps) ~ 40 for y and a hundred times that for the gradients
    scale = expected.abs().max().item()
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-5 * scale)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize('length', [64, 63, 161])
def test_the_authors_fft_path_is_the_causal_convolution_on_even_lengths_only(length):
    generator = torch.Generator().manual_seed(length)
    x, weight = torch.randn(2, 3, length, generator=generator), torch.randn(4, 3, length, generator=generator)
    with use_backend('fft'):
        ours = causal_conv1d(x.double(), weight.double())
    theirs = authors_causal_fftconv(x.double(), weight.double())
    torch.testing.assert_close(ours, causal_reference(x, weight), rtol=0, atol=1e-10)
    if length % 2 == 0:
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-10)
    else:  # irfft without n: another signal, as large as the output itself
        assert (theirs - ours).abs().max() > 0.1 * ours.abs().max()


@pytest.mark.parametrize('backend', BACKENDS_2D)
@pytest.mark.parametrize('size, taps', [((9, 11), (7, 5)), ((6, 5), (15, 15)), ((16, 16), (33, 33)), ((1, 1), (3, 3))])
def test_same_convolution_is_exact(backend, size, taps):
    generator = torch.Generator().manual_seed(sum(size + taps))
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, 3, *taps, dtype=torch.float64, generator=generator, requires_grad=True)
    with use_backend(backend):
        y = conv2d_same(x, weight)
        grads = torch.autograd.grad(y.square().sum(), (x, weight))
    expected = F.conv2d(x, weight, padding=(taps[0] // 2, taps[1] // 2))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), (x, weight))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_compiled_at_another_image_size_the_kernel_is_cropped_by_guards():
    """Under torch.compile an image size that changed between calls is a symbol. The taps that meet the image are
    decided by comparisons, which guard the graph, not by the symbol's min and max: Inductor could not order the
    strides of a kernel cropped by those (the CIFAR-10 model compiled for training failed at its second image
    size). Each graph computes the definition, for images larger and smaller than the kernel's reach."""
    graphs = []

    def record(graph: torch.fx.GraphModule, example_inputs):
        graphs.append(graph)
        return graph.forward

    weight = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    torch._dynamo.reset()  # a graph of this code compiled by another test would change which sizes are symbols
    compiled = torch.compile(lambda t: conv2d_same(t, weight), backend=record)
    for size in (16, 20, 24, 3):
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), F.conv2d(x, weight, padding=4), rtol=0, atol=1e-12)
    crops = [node for graph in graphs for node in graph.graph.nodes if node.target in (torch.sym_min, torch.sym_max)]
    assert crops == []
    assert len(graphs) == 3  # 20 compiles with a symbolic size, which 24 reuses; 3 crops the kernel


@pytest.mark.parametrize('backend', BACKENDS)
def test_first_and_second_derivatives_and_the_operator_checks(backend):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 9, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(3, 2, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    image = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    kernel = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    with use_backend(backend):
        assert torch.autograd.gradcheck(causal_conv1d, (x, weight))
        assert torch.autograd.gradgradcheck(causal_conv1d, (x, weight))
        if backend in BACKENDS_2D:
            assert torch.autograd.gradcheck(conv2d_same, (image, kernel))
            assert torch.autograd.gradgradcheck(conv2d_same, (image, kernel))
        torch.library.opcheck(torch.ops.smpconv.conv, (x.detach(), weight.detach(), [4]))
        torch.library.opcheck(torch.ops.smpconv.conv_grad_weight, (torch.randn(2, 3, 9, dtype=torch.float64),
                                                                  x.detach(), [5], [4]))


def test_fx_records_a_tcn_over_its_whole_kernels():
    """FX records the sequence models as the deployment tools need them (issue 21's box and point-by-point sampling
    depend on the points' values, which a graph must not): their whole kernels through PyTorch's convolution."""
    model = timm.create_model('smpconv_tcn_chartraj').eval()
    x = torch.randn(2, 3, 182, generator=torch.Generator().manual_seed(0))
    traced = torch.fx.symbolic_trace(model)
    assert 'smpconv::' not in traced.code
    with torch.no_grad():
        # float32 logits of order 0.1: the box's FFT and the whole kernel's direct convolution differ by rounding
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize('needs', ['both', 'weight', 'input'])
@pytest.mark.parametrize('length', [40, 1100])
def test_a_training_step_on_the_fft_transforms_x_the_kernel_and_the_output_gradient_once(monkeypatch, needs, length):
    """Issue 21: the forward pass keeps the spectra of x and of the kernel for the backward pass, which transforms
    dy once for both gradients; the gradients are those of the definition, whichever of them are asked for. The
    output is a tensor of its own, which a layer after it may change in place. At 1100 steps the spectra have
    more frequencies than a chunk of their transposing copies (`TRANSPOSE_CHUNK_ROWS`)."""
    assert (1100 + 12) // 2 + 1 > TRANSPOSE_CHUNK_ROWS  # the period's frequencies, at least
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, length, dtype=torch.float64, generator=generator, requires_grad=needs != 'weight')
    weight = torch.randn(4, 3, 13, dtype=torch.float64, generator=generator, requires_grad=needs != 'input')
    transforms = []
    rfftn = torch.fft.rfftn
    monkeypatch.setattr(torch.fft, 'rfftn', lambda *args, **kwargs: transforms.append(1) or rfftn(*args, **kwargs))
    with use_backend('fft'):
        y = causal_conv1d(x, weight).mul_(1.)
        inputs = [t for t in (x, weight) if t.requires_grad]
        grads = torch.autograd.grad(y.square().sum(), inputs)
    assert len(transforms) == 3 and y.is_contiguous()
    expected = causal_reference(x, weight)
    # float64: rounding of sums of a few hundred products of O(1) numbers
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), inputs)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize('box, pad, period', [((9, 9), (4, 4), (36, 36)), ((3, 7), (0, 6), (27, 20)),
                                               ((5, 4), (2, 1), (25, 45)), ((1, 1), (0, 0), (8, 9))])
def test_a_small_2d_box_is_transformed_by_dft_matrix_products(monkeypatch, box, pad, period):
    """A small 2-D box's kernel spectra and weight-gradient taps, by DFT matrix products, are those of the FFTs
    over the period: odd and even periods, taps before and after the current position, and a half spectrum whose
    values at f1 = 0 and P1 / 2 are not real (irfftn reads their real parts)."""
    cpu = torch.device('cpu')
    assert long_convolution._box_dft_pays(box, period, cpu)
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(4, 3, *box, dtype=torch.float64, generator=generator)
    lag_spectra = torch.randn(4, 3, period[0] * (period[1] // 2 + 1), dtype=torch.complex128, generator=generator)
    by_products = (long_convolution._conj_kernel_spectra(weight, list(pad), list(period)),
                   long_convolution._taps_of_lag_spectra(lag_spectra, list(period), box, pad))
    monkeypatch.setattr(long_convolution, '_box_dft_pays', lambda *args: False)
    by_ffts = (long_convolution._conj_kernel_spectra(weight, list(pad), list(period)),
               long_convolution._taps_of_lags(ffts.signals(lag_spectra, list(period)), box, pad))
    for got, want in zip(by_products, by_ffts):
        # float64: sums of at most a few hundred O(1) terms in another order
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_only_small_2d_boxes_on_the_cpu_are_transformed_by_dft_matrix_products():
    """The CIFAR-10 model's boxes (7 to 11 taps a side, periods 36 and 40) are; its whole 33 x 33 kernels on a
    48 x 48 period, 1-D kernels and GPUs keep the FFTs."""
    pays = long_convolution._box_dft_pays
    cpu = torch.device('cpu')
    assert pays((7, 7), (36, 36), cpu) and pays((11, 10), (40, 40), cpu)
    assert not pays((33, 33), (48, 48), cpu) and not pays((5,), (36,), cpu)
    assert not pays((9, 9), (36, 36), torch.device('cuda'))


def test_a_training_step_keeps_its_spectra_where_the_whole_step_is_faster_on_the_fft(monkeypatch):
    """Whether a training step convolves by `FFTConvolution` is timed on the step's three passes ('conv.step'),
    whatever the forward pass alone would run on; without a gradient only the forward pass is chosen."""
    x = torch.randn(2, 3, 40, requires_grad=True)
    weight = torch.randn(4, 3, 13, requires_grad=True)
    kept_spectra = []
    apply = long_convolution.FFTConvolution.apply
    monkeypatch.setattr(long_convolution.FFTConvolution, 'apply',
                        lambda *args: kept_spectra.append(1) or apply(*args))
    key = ('cpu', 'float32', 'contiguous', (2, 3, 40), (4, 3, 13, 12))
    for forward, step in [('torch', 'fft'), ('fft', 'torch')]:
        clear_choices()
        restore_choices({('conv.forward', *key): forward, ('conv.step', *key): step})
        kept_spectra.clear()
        causal_conv1d(x, weight)
        assert kept_spectra == ([1] if step == 'fft' else [])
    clear_choices()
    with torch.no_grad():
        causal_conv1d(x, weight)
    assert [k[0] for k in choices() if k[0].startswith('conv.')] == ['conv.forward']
    causal_conv1d(x, weight)
    assert ('conv.step', *key) in choices()  # the key it had before steps were told apart: saved choices apply
    causal_conv1d(x.detach(), weight)  # a first layer's input: its step is timed without dx, and chosen apart
    assert ('conv.step', *key[:-1], (*key[-1], (False, True))) in choices()


@pytest.mark.parametrize('needs', [(True, True), (False, True), (True, False)])
def test_both_timed_training_steps_compute_the_gradients_needed(needs):
    """The two candidates of 'conv.step' do the same work (the gradients needed, y standing in for dy), so that
    their timings compare like with like."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 40, dtype=torch.float64, generator=generator)
    weight = torch.randn(4, 3, 13, dtype=torch.float64, generator=generator)
    direct, fft = (CONV_BACKENDS[name].passes['conv.step'](x, weight, [12], needs) for name in ('torch', 'fft'))
    assert [g is not None for g in direct] == list(needs) and len(fft) == sum(needs)
    for got, want in zip(fft, [g for g in direct if g is not None]):
        # float64: rounding of sums of a few hundred products of O(10) numbers
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_a_training_step_on_the_fft_under_autocast():
    """Under bfloat16 autocast the step computes from the inputs rounded to bfloat16, in float32: against the
    float64 definition on the same rounded inputs, its gradients are off by the bfloat16 rounding of the output
    (dx, in x's autocast dtype) or by float32 sums (dw, returned to the float32 weight)."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 40, generator=generator, requires_grad=True)
    weight = torch.randn(4, 3, 13, generator=generator, requires_grad=True)
    grad_y = torch.randn(2, 4, 40, generator=generator).bfloat16()  # exact in bfloat16: dy is the same for both
    with use_backend('fft'), torch.autocast('cpu', dtype=torch.bfloat16):
        y = causal_conv1d(x, weight)
    assert y.dtype == torch.bfloat16
    grads = torch.autograd.grad(y, (x, weight), grad_y)
    rounded = [t.detach().bfloat16().double().requires_grad_() for t in (x, weight)]
    expected = torch.autograd.grad(causal_reference(*rounded), rounded, grad_y.double())
    for got, want in zip(grads, expected):
        assert got.dtype == torch.float32
        # a bfloat16 rounding (2^-8 relative) of sums of 13 x 4 products of O(1) numbers
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2 ** -8 * want.abs().max().item())


@pytest.mark.parametrize('backend', BACKENDS)
def test_output_dtype_and_empty_inputs(backend):
    x, weight = torch.randn(2, 3, 16), torch.randn(4, 3, 16)
    with use_backend(backend):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = causal_conv1d(x, weight)
        assert low.dtype == torch.bfloat16  # F.conv1d's under autocast, accumulated in float32
        torch.testing.assert_close(low.float(), causal_conv1d(x, weight), rtol=0.05, atol=0.3)
        assert causal_conv1d(x.bfloat16(), weight).dtype == torch.float32
        empty = causal_conv1d(x[:0], weight)
    assert empty.shape == (0, 4, 16)


def test_hopeless_candidates_are_not_timed(monkeypatch):
    """A direct convolution with 4,096 taps over 4,096 steps does ~500x the FFT's work: timing it would cost more
    than it could save, so the dispatcher leaves it out; with short kernels both are timed."""
    from smpconv_models.ops import choices, dispatch
    timed = []

    def fake_seconds(call, device):
        timed.append(call.func)
        return 1.

    monkeypatch.setattr(dispatch, 'seconds', fake_seconds)
    monkeypatch.setenv('SMPCONV_FFT_BACKEND', 'torch')  # the FFT's transforms forced: only the convolution times
    with torch.no_grad():
        causal_conv1d(torch.randn(2, 4, 4096), torch.randn(4, 4, 4096))
    assert timed == [] and set(choices().values()) == {'fft'}  # the only candidate left: nothing to time
    with torch.no_grad():
        x = torch.randn(2, 4, 64)
        causal_conv1d(x, torch.randn(4, 4, 5))
    assert set(timed) == {backend.passes['conv.forward'] for backend in CONV_BACKENDS.values() if backend.supports(x)}


def test_candidates_are_timed_on_the_whole_batch(monkeypatch):
    """The FFT's kernel transforms do not shrink with the batch, so the long convolution is not screened on one
    sample (which would favour the direct path): every timed call gets the whole batch."""
    from smpconv_models.ops import dispatch
    batches = []

    def fake_seconds(call, device):
        batches.append(call.args[0].shape[0])
        return 1.

    monkeypatch.setattr(dispatch, 'seconds', fake_seconds)
    causal_conv1d(torch.randn(4, 3, 64, requires_grad=True), torch.randn(4, 3, 5, requires_grad=True))
    assert len(batches) >= 2 and set(batches) == {4}


def test_arguments_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match=r'causal_conv1d takes x \[B, C, L\] and weight \[O, C, L\], got \(2, 3, 8\) '
                                         r'and \(4, 2, 5\)'):
        causal_conv1d(torch.zeros(2, 3, 8), torch.zeros(4, 2, 5))
    with pytest.raises(ValueError, match=r"'same' convolution needs odd kernel sizes, got \(4, 5\)"):
        conv2d_same(torch.zeros(1, 2, 8, 8), torch.zeros(3, 2, 4, 5))
    with pytest.raises(TypeError, match='floating-point tensors .* got x of torch.int64'):
        causal_conv1d(torch.zeros(1, 2, 8, dtype=torch.int64), torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match=r'takes a bias \[O\] = \[3\], got \(2,\)'):
        causal_conv1d(torch.zeros(1, 2, 8), torch.zeros(3, 2, 5), torch.zeros(2))


def test_a_tcn_kernel_resampled_for_half_the_rate_sees_the_decimated_signal_as_the_original():
    """A causal SMP kernel sampled at half its taps (kernel_scale 0.5) on a smooth signal taken at half the rate
    gives what the trained kernel gives on the original, at the same instants: within 5%, the error of summing
    the smooth product with twice the step (first order in the step; 3% here). Without re-sampling the kernel
    spans twice the time and the response is off by more than 100%."""
    torch.manual_seed(0)
    layer = CKConv(2, 3, 401, 12, ndim=1, radius=0.05, position_std=0.3).double()
    steps = torch.arange(1600, dtype=torch.float64)
    x = torch.stack([torch.sin(2 * math.pi * steps / 300), torch.cos(2 * math.pi * steps / 170)])[None]
    with torch.no_grad():
        original = layer(x)[..., 1::2][..., 400:]  # step t of the decimated signal is step 2t + 1, once warm
        as_trained = layer(x[..., 1::2])[..., 400:]
        layer.set_kernel_scale(0.5)
        assert layer.kernel_size == [200]
        resampled = layer(x[..., 1::2])[..., 400:]
    scale = original.abs().max()
    assert (resampled - original).abs().max() < 0.05 * scale
    assert (as_trained - original).abs().max() > 1. * scale


def test_kernel_scale_of_the_sequence_and_cifar_models():
    model = timm.create_model('smpconv_tcn_smnist', kernel_scale=0.5)
    assert {tuple(m.kernel_size) for m in model.modules() if isinstance(m, CKConv)} == {(392,)}
    model.set_kernel_scale(1.)
    assert {tuple(m.kernel_size) for m in model.modules() if isinstance(m, CKConv)} == {(784,)}
    resnet = timm.create_model('smpconv_resnet_cifar10', kernel_scale=2.)
    assert {tuple(m.kernel_size) for m in resnet.modules() if isinstance(m, CKConv)} == {(65, 65)}
    with pytest.raises(ValueError, match='no SMP kernels to re-sample'):
        timm.create_model('smpconv_tcn_smnist', kernel_type='dense', depth=1, kernel_scale=0.5)
    with pytest.raises(ValueError, match='dense kernel cannot be re-sampled'):
        CKConv(2, 3, 9, 4, ndim=1, radius=0.1, position_std=0.1, kernel_type='dense').set_kernel_scale(0.5)
