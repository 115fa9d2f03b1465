"""The four registered SMPConv networks: sizes, costs and what they add to timm's model API."""
import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

import smpconv_models  # noqa: F401  registers the models
from smpconv_models.hub import LAYER_OPS, count_macs
from smpconv_models.layers import ConvFFNBlock, LargeKernelBlock
from smpconv_models.smp import SMPKernel
from smpconv_models.models import SMPConvNet

MODELS = ['smpconv_t', 'smpconv_b', 'smpconv_mobile31', 'smpconv_mobile51', 'smpconv_nano']

# Parameters and conv+linear MACs at 224x224. T and B: the authors' model counted with fvcore
# (SPEC section 2); mobile: the appendix B.1 configuration counted the same way. Kernel generation (one
# [C, P] x [P, k*k] matmul per SMP layer) is counted apart, as the paper leaves it out.
# mobile51 computes less than fvcore counts: its 47x47 kernels on 14x14 maps (stage 3: 2 blocks of 256
# channels, 276 points) are cropped to the 27x27 taps that meet a pixel, in the convolution and the sampling.
SKIPPED_TAPS = 2 * 256 * (47 ** 2 - 27 ** 2)
COUNTS = {
    'smpconv_t': (26_705_248, 5_706_629_376 + 768_000, 530_590_464),
    'smpconv_b': (79_546_520, 16_609_209_344 + 1_024_000, 1_522_627_584),
    'smpconv_mobile31': (2_892_494, 1_325_000_768 + 320_000, 73_603_968),
    'smpconv_mobile51': (3_066_884, 2_444_929_088 + 320_000 - SKIPPED_TAPS * 14 * 14,
                         607_027_968 - SKIPPED_TAPS * 276),
    'smpconv_nano': (880_539, 289_076_480 + 256_000, 18_741_696),  # ours: counted here, for the README
    # the continuous models: their resizing layers counted as convolutions, the sampling of their banks from the
    # points included (the depthwise resizing operator does it inside; as much as the taps at batch 1)
    'smpconv_nano_cc': (880_647, 299_701_760 + 256_000, 18_741_696),
    'smpconv_nano_ci': (880_707, 303_464_960 + 256_000, 18_742_371),
    'smpconv_nano_gradual': (1_229_080, 526_751_156 + 256_000, 34_320_756),
}


@pytest.mark.parametrize('name', list(COUNTS))
def test_parameter_and_mac_counts(name):
    params, conv_linear_macs, kernel_macs = COUNTS[name]
    model = timm.create_model(name, device='meta')
    assert sum(p.numel() for p in model.parameters()) == params
    counted = count_macs(model, (3, 224, 224))
    assert sum(counted.get(op, 0) for op in LAYER_OPS) == conv_linear_macs
    assert counted['aten.mm'] == kernel_macs


@pytest.mark.parametrize('name, kernel_sizes, points, ffn_ratio', [
    ('smpconv_t', (31, 29, 27, 13), (240, 210, 182, 42), 4),
    ('smpconv_mobile51', (51, 49, 47, 13), (325, 300, 276, 21), 2),
])
def test_architecture(name, kernel_sizes, points, ffn_ratio):
    model = timm.create_model(name, device='meta')
    for stage, size, num_points in zip(model.stages, kernel_sizes, points):
        assert isinstance(stage.blocks[0], LargeKernelBlock) and isinstance(stage.blocks[1], ConvFFNBlock)
        smp = stage.blocks[0].large_kernel.smp.conv.points
        assert smp.kernel_size == (size, size) and smp.num_points == num_points
        assert stage.blocks[1].pw1.conv.out_channels == ffn_ratio * stage.blocks[1].pw1.conv.in_channels
    assert [info['reduction'] for info in model.feature_info] == [4, 8, 16, 32]


def test_drop_path_rates_follow_the_authors():
    # linspace(0, rate, number of pairs); both blocks of a pair share it
    model = timm.create_model('smpconv_t', drop_path_rate=0.1, device='meta')
    rates = [block.drop_path.drop_prob if hasattr(block.drop_path, 'drop_prob') else 0.
             for stage in model.stages for block in stage.blocks]
    expected = torch.linspace(0, 0.1, 14).repeat_interleave(2).tolist()
    assert rates == pytest.approx(expected)


def test_architecture_arguments():
    assert SMPConvNet(depths=(1,), dims=(8,), kernel_sizes=(31,), points_divisor=8, num_classes=0,
                      device='meta').stages[0].blocks[0].large_kernel.smp.conv.points.num_points == 120
    model = SMPConvNet(
        depths=(1, 1), dims=(16, 24), kernel_sizes=(9, 7), num_points=(5, 3), ffn_ratio=1.5, dw_ratio=2,
        small_kernel_size=None, num_classes=7, in_chans=1)
    block = model.stages[1].blocks[0]
    assert block.large_kernel.small_conv is None
    assert block.large_kernel.smp.conv.points.weights.shape == (48, 3)
    assert model.stages[1].blocks[1].pw1.conv.out_channels == 36
    assert model(torch.randn(2, 1, 32, 48)).shape == (2, 7)
    with pytest.raises(ValueError, match='one entry per stage'):
        SMPConvNet(depths=(1, 1), dims=(16, 24), kernel_sizes=(9,))
    with pytest.raises(ValueError, match='odd kernel sizes'):
        SMPConvNet(depths=(1,), dims=(16,), kernel_sizes=(8,))
    with pytest.raises(ValueError, match=r'odd kernel sizes, got \(4,\)'):
        SMPConvNet(depths=(1,), dims=(16,), kernel_sizes=(9,), small_kernel_size=4)
    with pytest.raises(TypeError, match='not_an_arg'):
        timm.create_model('smpconv_t', device='meta', not_an_arg=1)


@pytest.mark.parametrize('kwargs, message', [
    (dict(points_divisor=0), r'points_divisor takes a positive integer .*got 0'),
    (dict(kernel_sizes=(31., 15, 7, 3)), r'kernel_sizes takes a sequence of positive integers.*got \(31\.0, 15'),
    (dict(kernel_sizes=31), r'kernel_sizes takes a sequence of positive integers.*got 31'),
    (dict(kernel_scale=float('nan')), 'kernel_scale takes a positive finite number, got nan'),
    (dict(kernel_scale=0), 'kernel_scale takes a positive finite number, got 0'),
    (dict(drop_path_rate=-0.1), r'drop_path_rate takes a probability in \[0, 1\), got -0\.1'),
    (dict(drop_rate=1.), r'drop_rate takes a probability in \[0, 1\), got 1\.0'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model('smpconv_nano', device='meta', **kwargs)


@pytest.mark.parametrize('name, bad, expected', [
    ('smpconv_nano', (2, 4, 64, 64), r'SMPConvNet takes inputs \[B, 3, H, W\], got one of shape \(2, 4, 64, 64\)$'),
    ('smpconv_nano_cc', (3, 64, 64), r'SMPConvNet takes inputs \[B, 3, H, W\], got one of shape \(3, 64, 64\)$'),
    ('smpconv_resnet_cifar10', (2, 1, 32, 32), r'SMPConvResNet takes inputs \[B, 3, H, W\], got one of shape'),
    ('smpconv_tcn_smnist', (2, 3, 784), r'SMPConvTCN takes inputs \[B, 1, N\], got one of shape \(2, 3, 784\)$'),
    ('smpconv_tcn_speech_mfcc', (2, 1, 20, 161), r'SMPConvTCN takes inputs \[B, 20, N\], got one of shape'),
])
def test_an_input_of_the_wrong_channels_or_rank_is_a_one_line_error(name, bad, expected):
    """Named as the network takes its input, not by whichever layer first fails on it (the sequence and CIFAR-10
    models' first convolution named its box-cropped kernel: weight [30, 1, 273])."""
    model = timm.create_model(name, num_classes=10).eval()
    for call in (model, model.forward_features, model.forward_intermediates):
        with pytest.raises(ValueError, match=expected) as error:
            call(torch.randn(bad))
        assert '\n' not in str(error.value)


def test_an_empty_batch_gives_empty_logits():
    model = timm.create_model('smpconv_nano', num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.zeros(0, 3, 64, 64)).shape == (0, 10)


def test_project_radii_reaches_every_smp_layer():
    model = timm.create_model('smpconv_mobile31')
    kernels = [m for m in model.modules() if isinstance(m, SMPKernel)]
    assert len(kernels) == 8
    with torch.no_grad():
        for kernel in kernels:
            kernel.radii.uniform_(-1., 2.)
    model.project_radii()
    for kernel in kernels:
        assert kernel.radii.min() >= 1e-3 and kernel.radii.max() <= 1.


def test_positions_are_excluded_from_weight_decay():
    model = timm.create_model('smpconv_mobile31')
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for group in optimizer.param_groups if group['weight_decay'] > 0 for p in group['params']}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[i] for i in decayed}
    assert not any(n.endswith(('.positions', '.radii', '.bias')) for n in decayed_names)
    # radii stay undecayed when they are not 1-D as well
    assert set(model.no_weight_decay()) == {'*.points.positions', '*.points.radii'}
    assert any(n.endswith('.points.weights') for n in decayed_names)
    assert 'head.fc.weight' in decayed_names


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model('smpconv_mobile31', num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)
        model(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain)


def test_channels_last_and_features_only():
    model = timm.create_model('smpconv_mobile31').eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(
            model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last)), expected,
            rtol=1e-4, atol=1e-4)  # float32 convolutions in another summation order
    features = timm.create_model('smpconv_mobile31', features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        maps = features(x)
    assert [tuple(m.shape) for m in maps] == [(1, 128, 12, 16), (1, 320, 3, 4)]


def test_runs_in_channels_last_on_cpu_whatever_the_input_layout():
    """oneDNN and the depthwise backends are fastest in channels_last on CPUs (benchmarks/RESULTS.md)."""
    torch.manual_seed(0)
    model = timm.create_model('smpconv_nano', num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)
        reference = model.double()(x.double())
    assert x.is_contiguous()  # the caller's tensor is left as it was
    assert all(m.is_contiguous(memory_format=torch.channels_last) and not m.is_contiguous() for m in maps)
    # float32 against float64: the same values, to float32 rounding accumulated over 12 blocks
    torch.testing.assert_close(logits.double(), reference, rtol=1e-4, atol=1e-4)


def test_builds_on_meta_and_in_other_dtypes():
    model = timm.create_model('smpconv_b', device='meta', dtype=torch.bfloat16)
    assert all(t.device.type == 'meta' and t.dtype == torch.bfloat16 for t in model.state_dict().values()
               if t.is_floating_point())
    small = timm.create_model('smpconv_mobile31', dtype=torch.float64).eval()
    assert small(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
