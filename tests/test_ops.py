"""The depthwise convolution operator: its backends against float64, the kernel crop; the operator framework and
its dispatcher."""
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch
import torch.nn.functional as F

from smpconv_models.layers import SMPConv2d
from smpconv_models.ops import ENV_VAR, causal_conv1d, choices, clear_choices, conv2d_same, depthwise_conv2d, \
    use_backend, useful_window
from smpconv_models.ops import dispatch
from smpconv_models.ops.depthwise import BACKENDS

CPU_BACKENDS = ['torch', 'torch_channels_last', 'fft']
# (batch, channels, height, width, kernel): non-square kernels, odd widths, and the largest kernel a backend
# is given, (2H - 1) x (2W - 1): the operator crops larger ones
SHAPES = [(2, 3, 9, 11, (7, 5)), (1, 4, 6, 5, (11, 9)), (3, 2, 17, 12, (3, 13))]


def reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The definition, in float64."""
    kh, kw = weight.shape[-2:]
    return F.conv2d(x.double(), weight.double().unsqueeze(1), padding=(kh // 2, kw // 2), groups=weight.shape[0])


def inputs(batch, channels, height, width, kernel, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(channels, *kernel, generator=generator, dtype=dtype)
    return x, weight


pytestmark = pytest.mark.usefixtures('fresh_choices')


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('shape', SHAPES)
def test_backend_passes_match_float64_definition(backend, shape):
    x, weight = inputs(*shape)
    grad_y = torch.randn_like(x)
    expected_grad_w = torch.func.vjp(lambda w: reference(x, w), weight)[1](grad_y)[0]
    # float64 all through: only rounding differs (FFT's is ~1e-15 relative to the sums' magnitude)
    passes = BACKENDS[backend].passes
    torch.testing.assert_close(passes['forward'](x, weight), reference(x, weight), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(passes['grad_weight'](grad_y, x, weight.shape[-2:]), expected_grad_w,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_float32_backends_are_within_float32_rounding(backend):
    x, weight = inputs(2, 3, 20, 24, (31, 31), dtype=torch.float32)
    # sums of ~600 products of unit-variance terms: float32 rounding stays far below 1e-3 of their size (~25)
    torch.testing.assert_close(BACKENDS[backend].passes['forward'](x, weight).double(), reference(x, weight),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_operator_first_and_second_derivatives_are_exact(backend):
    x, weight = inputs(2, 2, 5, 6, (5, 3))
    bias = torch.randn(2, dtype=torch.float64)
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())
    with use_backend(backend):
        assert torch.autograd.gradcheck(depthwise_conv2d, args)
        assert torch.autograd.gradgradcheck(depthwise_conv2d, args, fast_mode=True)  # e.g. gradient penalties


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_operator_passes_pytorch_custom_op_checks(backend):
    """Fake tensors (torch.compile, export), autograd registration, schema, and the same results inside a
    compiled graph, as PyTorch checks them."""
    x, weight = inputs(2, 3, 6, 7, (5, 3))
    with use_backend(backend):
        torch.library.opcheck(torch.ops.smpconv.depthwise_conv2d, (x.requires_grad_(), weight.requires_grad_()))
        torch.library.opcheck(torch.ops.smpconv.depthwise_conv2d_grad_weight, (torch.randn_like(x), x, 5, 3))


def test_flops_are_counted():
    x, weight = inputs(2, 3, 6, 7, (5, 3))
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        depthwise_conv2d(x.requires_grad_(), weight.requires_grad_()).sum().backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()['Global'].items()}
    one_pass = 2 * x.numel() * 5 * 3
    assert counts == {'smpconv.depthwise_conv2d': 2 * one_pass, 'smpconv.depthwise_conv2d_grad_weight': one_pass}


def test_kernel_is_cropped_to_the_taps_that_meet_the_image_exactly():
    x, weight = inputs(2, 3, 5, 8, (31, 31))
    assert useful_window([31, 31], 5, 8) == [9, 15]
    assert useful_window([7, 7], 5, 8) == [7, 7]
    torch.testing.assert_close(depthwise_conv2d(x, weight), reference(x, weight), rtol=1e-12, atol=1e-12)


def test_smp_convolution_samples_only_the_window_it_needs():
    """The taps that meet the image (11 rows of an image of 6) and may be nonzero (at initialisation the points
    sit near the centre: here columns 10 to 20, which the central 13 hold; the others are zero)."""
    torch.manual_seed(0)
    conv = SMPConv2d(4, kernel_size=31, num_points=16).double()
    window = conv.touched_window(torch.zeros(1, 4, 6, 40))
    assert window == [11, 13]
    full = conv.kernel()
    assert not full[:, :, :9].any() and not full[:, :, 22:].any()
    torch.testing.assert_close(conv.kernel(window), full[:, 10:21, 9:22], rtol=0, atol=1e-12)
    x = torch.randn(2, 4, 6, 40, dtype=torch.float64)
    torch.testing.assert_close(conv(x), reference(x, full), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('layout', ['channels_last', 'sliced'])
@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_any_input_layout_gives_the_same_values_in_the_input_layout(backend, layout):
    x, weight = inputs(2, 4, 9, 10, (7, 7))
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.cat([x, x], dim=-1)[..., ::2]
    with use_backend(backend):
        y = depthwise_conv2d(x, weight)
    torch.testing.assert_close(y, reference(x, weight), rtol=1e-10, atol=1e-10)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == 'channels_last')


def replace_forward(monkeypatch, name: str, forward) -> None:
    """Backend `name` computes the depthwise forward pass with `forward(x, weight, original)` for this test."""
    backend = BACKENDS[name]
    original = backend.passes['forward']
    monkeypatch.setitem(BACKENDS, name, backend._replace(
        passes={**backend.passes, 'forward': lambda x, w: forward(x, w, original)}))


@pytest.fixture
def calls(monkeypatch) -> list:
    """The names of the CPU backends, in the order their forward passes run."""
    names = []
    for name in CPU_BACKENDS:
        replace_forward(monkeypatch, name, lambda x, w, original, name=name: names.append(name) or original(x, w))
    return names


def test_dispatcher_screens_on_one_sample_and_times_the_survivors_on_the_batch(monkeypatch):
    """A bounded choice: every candidate runs on one sample, those within 4x of the best on the batch, and the
    close ones once more; the choice then serves this shape, and batch sizes within a factor of two."""
    runs = []
    per_sample = {'torch': 10., 'torch_channels_last': 2., 'fft': 1.}  # ranking on one sample ...
    whole = {'torch_channels_last': 16., 'fft': 20.}  # ... and on the batch of 8: fft loses, but within 1.3x
    for name in CPU_BACKENDS:
        replace_forward(monkeypatch, name,
                        lambda x, w, original, name=name: runs.append((name, x.shape[0])) or original(x, w))

    def fake_seconds(call, device):
        call()
        name, batch = runs[-1]
        return (per_sample if batch == 1 else whole)[name]

    monkeypatch.setattr(dispatch, 'seconds', fake_seconds)
    x, weight = inputs(8, 3, 8, 8, (5, 5))
    depthwise_conv2d(x, weight)
    # all three once on one sample; the two survivors on the batch (an untimed run, a timed one), and once more
    # each as they are close; then the call itself
    survivors = ['torch_channels_last', 'fft']
    assert runs == [(name, 1) for name in CPU_BACKENDS] + [(name, 8) for name in survivors for _ in range(2)] + \
        [(name, 8) for name in survivors] + [('torch_channels_last', 8)]
    assert choices() == {('forward', 'cpu', 'float64', 'contiguous', (8, 3, 8, 8), (5, 5)): 'torch_channels_last'}
    runs.clear()
    depthwise_conv2d(x, weight)
    depthwise_conv2d(x[:4], weight)  # half the batch: the same choice, untimed
    assert runs == [('torch_channels_last', 8), ('torch_channels_last', 4)]
    runs.clear()
    depthwise_conv2d(torch.cat([x, x, x]), weight)  # 3x the batch: chosen anew
    assert len(runs) > 1 and len(choices()) == 3


def test_choices_are_plain_data_that_another_process_can_restore(monkeypatch, calls, tmp_path):
    x, weight = inputs(2, 3, 8, 8, (5, 5))
    with torch.no_grad():
        depthwise_conv2d(x.contiguous(memory_format=torch.channels_last), weight)
    torch.save(choices(), tmp_path / 'choices.pth')
    saved = torch.load(tmp_path / 'choices.pth', weights_only=True)  # what a training state holds
    forward = ('forward', 'cpu', 'float64', 'channels_last', (2, 3, 8, 8), (5, 5))
    # the depthwise pass's choice, and, where its timing chose the FFT backend, its transforms' own
    assert forward in saved and {key[0] for key in saved} <= {'forward', 'fft.spectra', 'fft.cropped_signals'}
    clear_choices()
    saved = {forward: 'torch'}  # whichever timing chose: a restored choice is used as it is

    def no_timing(run, device):
        raise AssertionError('timed a shape with a restored choice')

    monkeypatch.setattr(dispatch, 'seconds', no_timing)
    dispatch.restore_choices(saved)
    calls.clear()
    depthwise_conv2d(x.contiguous(memory_format=torch.channels_last), weight)
    assert calls == ['torch'] and choices() == saved
    with pytest.raises(ValueError, match="unknown convolution backend 'cutlass' for the forward pass: one of torch, "):
        dispatch.restore_choices({('forward', 'cpu', 'float64', 'contiguous', (1, 1, 3, 3), (3, 3)): 'cutlass'})


def test_backend_can_be_forced_in_code_and_by_environment(monkeypatch, calls):
    x, weight = inputs(1, 2, 6, 6, (3, 3))
    with use_backend('fft'):
        with use_backend('torch'):
            depthwise_conv2d(x, weight)
        depthwise_conv2d(x, weight)
    monkeypatch.setenv(ENV_VAR, 'torch_channels_last')
    depthwise_conv2d(x, weight)
    assert calls == ['torch', 'fft', 'torch_channels_last']
    # forcing times nothing: the choices are those of the FFT backend's transforms, an operator of their own
    assert {key[0] for key in choices()} == {'fft.spectra', 'fft.cropped_signals'}


def test_unknown_or_unusable_backend_is_named():
    with pytest.raises(ValueError, match="unknown convolution backend 'cudnn'.*torch, "):
        with use_backend('cudnn'):
            pass
    if not BACKENDS['triton'].supports(torch.zeros(1)):
        with use_backend('triton'), pytest.raises(RuntimeError, match="'triton' does not run torch.float32 on cpu"):
            depthwise_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3))
        # a choice restored from a machine with Triton is made anew here
        key = ('forward', 'cpu', 'float32', 'contiguous', (1, 1, 3, 3), (3, 3))
        dispatch.restore_choices({key: 'triton'})
        depthwise_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3))
        assert choices()[key] in CPU_BACKENDS


@pytest.mark.parametrize('x_shape, weight_shape, message', [
    ((2, 3, 8), (3, 5, 5), r'x \[B, C, H, W\] and weight \[C, kh, kw\], got \(2, 3, 8\) and \(3, 5, 5\)'),
    ((2, 3, 8, 8), (4, 5, 5), r'got \(2, 3, 8, 8\) and \(4, 5, 5\)'),
    ((2, 3, 8, 8), (3, 4, 5), r'odd kernel sizes, got \(4, 5\)'),
])
def test_bad_shapes_are_named(x_shape, weight_shape, message):
    with pytest.raises(ValueError, match=message):
        depthwise_conv2d(torch.zeros(x_shape), torch.zeros(weight_shape))


@pytest.mark.parametrize('dtype', [torch.int64, torch.bool, torch.complex64])
def test_non_floating_inputs_are_named(dtype):
    with pytest.raises(TypeError, match=f'floating-point tensors .*got x of {dtype}'):
        depthwise_conv2d(torch.zeros(1, 2, 5, 5, dtype=dtype), torch.zeros(2, 3, 3))
    with pytest.raises(TypeError, match=f'got weight of {dtype}'):
        depthwise_conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 3, 3, dtype=dtype))


@pytest.mark.parametrize('backend', [None] + CPU_BACKENDS)
@pytest.mark.parametrize('shape', [(0, 3, 8, 8), (2, 3, 0, 8), (2, 0, 8, 8)])
def test_empty_inputs_give_empty_outputs(backend, shape):
    """As F.conv2d's: nothing to time or compute, and zero gradients for the weight."""
    x = torch.zeros(shape, requires_grad=True)
    weight = torch.randn(shape[1], 5, 5, requires_grad=True)
    with use_backend(backend):
        y = depthwise_conv2d(x, weight)
        y.sum().backward()
    assert y.shape == shape and torch.equal(weight.grad, torch.zeros_like(weight)) and x.grad.shape == shape


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('compiled', [False, True])
def test_output_dtype_is_that_of_f_conv2d_on_every_backend(backend, compiled):
    """Under autocast, float32 inputs compute in the autocast dtype (as F.conv2d's); elsewhere x and weight are
    promoted to one dtype. In eager and compiled runs alike."""
    x, weight = torch.randn(2, 3, 8, 8), torch.randn(3, 5, 5)
    bias = torch.randn(3)
    conv = torch.compile(depthwise_conv2d, backend='aot_eager', fullgraph=True) if compiled else depthwise_conv2d
    with use_backend(backend):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            expected = F.conv2d(x, weight.unsqueeze(1), bias, padding=2, groups=3).dtype
            assert conv(x, weight, bias).dtype == expected == torch.bfloat16
            assert conv(x.double(), weight.double()).dtype == torch.float64  # autocast leaves float64 alone
        assert conv(x.bfloat16(), weight).dtype == torch.float32
        assert conv(x.half(), weight.half(), bias.half()).dtype == torch.float16


def test_backends_that_fail_while_timed_are_passed_over(monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 80.00 GiB')

    replace_forward(monkeypatch, 'torch', out_of_memory)
    x, weight = inputs(2, 3, 8, 8, (5, 5), dtype=torch.float32)
    torch.testing.assert_close(depthwise_conv2d(x, weight), reference(x, weight).float(), rtol=1e-5, atol=1e-5)
    assert choices()[('forward', 'cpu', 'float32', 'contiguous', (2, 3, 8, 8), (5, 5))] != 'torch'
    for name in CPU_BACKENDS:
        replace_forward(monkeypatch, name, out_of_memory)
    with pytest.raises(RuntimeError, match=r'no convolution backend runs forward .* torch: OutOfMemoryError: '
                                           r'CUDA out of memory.*; fft: OutOfMemoryError'):
        depthwise_conv2d(x[:, :, :6, :6], weight)  # a shape without a choice


def test_model_trains_the_same_on_every_backend():
    """A training step of a whole SMPConv model, in float64: the backends agree to rounding."""
    import timm
    import smpconv_models  # noqa: F401

    torch.manual_seed(0)
    model = timm.create_model('smpconv_nano', num_classes=5).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    results = {}
    for backend in CPU_BACKENDS:
        model.zero_grad()
        with use_backend(backend):
            loss = model(x).square().sum()
            loss.backward()
        results[backend] = [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
    for backend in CPU_BACKENDS[1:]:
        for got, expected in zip(results[backend], results['torch']):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_triton_kernels_under_the_interpreter():
    """tests/triton_suite in a process of its own, with TRITON_INTERPRET=1 set before Triton loads."""
    pytest.importorskip('triton')
    suite = Path(__file__).parent / 'triton_suite'
    result = subprocess.run([sys.executable, '-m', 'pytest', str(suite), '-q', '-p', 'no:cacheprovider'],
                            env={**os.environ, 'TRITON_INTERPRET': '1'}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_each_operator_is_forced_by_its_own_environment_variable(monkeypatch):
    """SMPCONV_DWCONV_BACKEND forces the depthwise convolution only and SMPCONV_CONV_BACKEND the long one only
    (a forced pass records no choice); `use_backend` forces every operator that has a backend of its name."""
    image, weight = inputs(1, 2, 6, 6, (3, 3), dtype=torch.float32)
    sequence, kernel = torch.randn(2, 3, 16), torch.randn(4, 3, 5)

    def passes_chosen() -> list:
        clear_choices()
        with torch.no_grad():
            depthwise_conv2d(image, weight)
            causal_conv1d(sequence, kernel)
        return [key[0] for key in choices()]

    monkeypatch.setenv('SMPCONV_FFT_BACKEND', 'torch')  # the FFT backends' transforms make no choices either
    monkeypatch.setenv(ENV_VAR, 'fft')
    assert passes_chosen() == ['conv.forward']
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv('SMPCONV_CONV_BACKEND', 'fft')
    assert passes_chosen() == ['forward']
    with use_backend('torch'):
        assert passes_chosen() == []
    with use_backend('torch_channels_last'):  # not a backend of the long convolution: its variable still holds
        assert passes_chosen() == []
    monkeypatch.setenv('SMPCONV_CONV_BACKEND', 'torch_channels_last')
    with pytest.raises(ValueError, match="unknown long convolution backend 'torch_channels_last' in "
                                         "SMPCONV_CONV_BACKEND: one of torch, fft"):
        causal_conv1d(sequence, kernel)


def test_a_third_operator_is_declared_once_and_dispatched_like_the_others(monkeypatch):
    monkeypatch.setattr(dispatch, '_OPERATORS', dict(dispatch._OPERATORS))  # declared for this test only
    scaling = dispatch.Operator('scaling', 'SMPCONV_SCALING_BACKEND', {
        'multiply': dispatch.Backend({'scaling.forward': lambda x, scale: x * scale}),
        'add': dispatch.Backend({'scaling.forward': lambda x, scale: x + x * (scale - 1)}),
    })
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(scaling.compute('scaling.forward', x, 2., signature=(2.,)), 2 * x)
    assert list(choices()) == [('scaling.forward', 'cpu', 'float32', 'contiguous', (4, 3, 5), (2.,))]
    with use_backend('add'):
        assert scaling.choose('scaling.forward', (x, 3.), 1, (3.,)) == 'add'
    with pytest.raises(ValueError, match="pass 'forward' of the copy is a pass of the depthwise convolution already"):
        dispatch.Operator('copy', 'SMPCONV_COPY_BACKEND', {'torch': dispatch.Backend({'forward': torch.clone})})
    with pytest.raises(ValueError, match="unknown convolution pass 'conv.backward': one of .*conv.grad_weight"):
        dispatch.restore_choices({('conv.backward', 'cpu', 'float32', 'contiguous', (1, 1, 8), (1, 1, 3, 2)): 'fft'})


def test_an_operator_called_while_another_is_timed_takes_its_first_backend_untimed(monkeypatch):
    """The FFT backends' transforms are an operator of their own: while the convolution times its backends, they
    take their first backend that runs, so that its timing holds none of theirs, and they choose at their first call
    outside of timing."""
    monkeypatch.setattr(dispatch, '_OPERATORS', dict(dispatch._OPERATORS))  # declared for this test only
    inner_calls = []
    inner = dispatch.Operator('inner', 'SMPCONV_INNER_BACKEND', {
        name: dispatch.Backend({'inner.forward': lambda x, _name=name: inner_calls.append(_name) or x + 1})
        for name in ('first', 'second')})
    outer = dispatch.Operator('outer', 'SMPCONV_OUTER_BACKEND', {
        name: dispatch.Backend({'outer.forward': lambda x: 2 * inner.compute('inner.forward', x, signature=())})
        for name in ('one', 'other')})
    x = torch.randn(4, 3)
    outer.choose('outer.forward', (x,), 1, ())
    assert set(inner_calls) == {'first'} and [key[0] for key in choices()] == ['outer.forward']
    inner_calls.clear()
    torch.testing.assert_close(outer.compute('outer.forward', x, signature=()), 2 * (x + 1))
    assert set(inner_calls) == {'first', 'second'}  # timed
    assert [key[0] for key in choices()] == ['outer.forward', 'inner.forward']


def test_graph_recorders_get_pytorch_convolutions():
    """TorchScript, jit.trace and FX record PyTorch's own convolutions in place of the operators, so that what they
    save runs without this package."""
    class Convolutions(torch.nn.Module):
        def forward(self, image: torch.Tensor, filters: torch.Tensor, kernel: torch.Tensor, sequence: torch.Tensor,
                    taps: torch.Tensor) -> List[torch.Tensor]:
            return [depthwise_conv2d(image, filters), conv2d_same(image, kernel), causal_conv1d(sequence, taps)]

    args = (*inputs(2, 3, 8, 9, (5, 3)), torch.randn(4, 3, 3, 5, dtype=torch.float64),
            torch.randn(2, 3, 12, dtype=torch.float64), torch.randn(4, 3, 7, dtype=torch.float64))
    expected = Convolutions()(*args)
    scripted = torch.jit.script(Convolutions())
    jit_traced = torch.jit.trace(Convolutions(), args)
    traced = torch.fx.symbolic_trace(Convolutions())
    assert 'smpconv::' not in str(scripted.inlined_graph) + str(jit_traced.inlined_graph)
    assert 'smpconv' not in traced.code
    for recorded in (scripted, jit_traced, traced):
        for got, want in zip(recorded(*args), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
