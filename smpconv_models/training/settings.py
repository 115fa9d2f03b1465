"""A run's configuration, resolved once from the flag values into frozen pieces that the library functions read.

A piece's fields carry the names of the flags they come from (argparse's `dest`), so that a flag, a config file key
and a field are one name. Lists become tuples and mappings read-only views: a piece is not changed once made.
"""
import math
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import torch

from ..datasets.timeseries import auto_batch_and_epochs, is_series_dataset, summarize_training_series
from ..factory import create_model
from .config import AUTO, NOT_CONFIGURABLE, ConfigError, plain

__all__ = ['DeviceSettings', 'DataSettings', 'SplitSettings', 'AugmentSettings', 'MixupSettings', 'OptimizerSettings',
           'ScheduleSettings', 'LoopSettings', 'ModelSettings', 'ModelTrainingSettings', 'EmaSettings', 'RunSettings',
           'TrainingConfig', 'EvalSettings', 'resolve_device', 'resolve_batch', 'resolve_training_config',
           'resolve_eval_config']

Flags = Mapping[str, Any]
Piece = TypeVar('Piece')


def _frozen(value: Any) -> Any:
    """A list as a tuple, a mapping as a read-only view of a copy (its values passed on as they are)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    return value


def _check_at_least_one(piece: Any, *names: str) -> None:
    for name in names:
        if getattr(piece, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(piece, name)}")


def _pick(piece: Type[Piece], flags: Flags, **resolved: Any) -> Piece:
    """The piece made of the flag values of its fields' names, `resolved` values in place of the given ones."""
    values = {**flags, **resolved}
    return piece(**{field.name: _frozen(values[field.name]) for field in fields(piece)})


@dataclass(frozen=True)
class DeviceSettings:
    """Where the run computes, in which precision."""
    device: str  # 'auto', 'cpu' or 'cuda'
    amp: bool
    amp_dtype: str  # the lower precision of `amp`: 'float16' or 'bfloat16'

    @property
    def mixed_precision(self) -> str:
        """accelerate's name of the precision."""
        return {'bfloat16': 'bf16', 'float16': 'fp16'}[self.amp_dtype] if self.amp else 'no'


@dataclass(frozen=True)
class DataSettings:
    """Which dataset, read how, and the evaluation preprocessing of its images (unset: the model's)."""
    dataset: str
    data_dir: Optional[str]
    class_map: str
    dataset_download: bool
    input_img_mode: str
    permutation_seed: int  # pmnist's pixel order
    series_length: Optional[int]  # time series: the steps they are padded or truncated to (unset: the longest's)
    series_normalize: str  # 'channel', 'series' or 'none'
    val_fraction: float  # time series: the training data's fraction held out for validation
    sample_rate: int  # audio clips: the rate they are resampled to
    input_size: Optional[Tuple[int, int, int]]
    crop_pct: Optional[float]
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]
    interpolation: str
    workers: int
    pin_mem: bool
    seed: int


@dataclass(frozen=True)
class SplitSettings:
    """The splits a run trains and evaluates on (the samples per epoch of an iterable dataset)."""
    train_split: str
    val_split: str
    train_num_samples: Optional[int]
    val_num_samples: Optional[int]


@dataclass(frozen=True)
class AugmentSettings:
    """The augmentation of training items: timm's image transform, a sequence task's input dropout."""
    no_aug: bool
    scale: Tuple[float, float]
    ratio: Tuple[float, float]
    hflip: float
    vflip: float
    color_jitter: float
    aa: str
    train_interpolation: str
    reprob: float
    remode: str
    recount: int
    input_dropout: float
    scale_augmentation: Optional[Tuple[float, float]]  # the range of a batch's resize factor

    def __post_init__(self):
        if self.scale_augmentation is not None and not 0 < self.scale_augmentation[0] <= self.scale_augmentation[1]:
            raise ConfigError(f'--scale-augmentation takes factors 0 < MIN <= MAX, got {self.scale_augmentation}')


@dataclass(frozen=True)
class MixupSettings:
    """Mixup and cutmix of training batches, and the label smoothing of the targets."""
    mixup: float
    cutmix: float
    cutmix_minmax: Optional[Tuple[float, float]]
    mixup_prob: float
    mixup_switch_prob: float
    mixup_mode: str
    mixup_off_epoch: int
    smoothing: float

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None


@dataclass(frozen=True)
class BatchSettings:
    """The batch per process, per optimizer update over all processes, and of evaluation."""
    batch_size: int
    global_batch_size: int
    validation_batch_size: int


@dataclass(frozen=True)
class SavedBatch:
    """The batches of a run to resume: per process, per update, and on how many processes."""
    batch_size: int
    global_batch_size: int
    world_size: int


@dataclass(frozen=True)
class OptimizerSettings:
    """The optimizer, at its peak learning rate `lr`."""
    opt: str
    lr: float
    opt_eps: float
    opt_betas: Optional[Tuple[float, ...]]
    momentum: float
    weight_decay: float
    radius_lr_scale: float


@dataclass(frozen=True)
class ScheduleSettings:
    """The learning rate schedule over `epochs` in all, warm-up included."""
    sched: str
    epochs: int
    warmup_epochs: int
    warmup_lr: float
    min_lr: float
    cooldown_epochs: int

    def __post_init__(self):
        _check_at_least_one(self, 'epochs')
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f'--warmup-epochs ({self.warmup_epochs}) must be shorter than --epochs ({self.epochs})')


@dataclass(frozen=True)
class LoopSettings:
    """What a training epoch does around each optimizer update."""
    grad_accum_steps: int
    clip_grad: Optional[float]
    clip_mode: str  # 'norm' or 'value'
    log_interval: int
    recovery_interval: int  # 0: no recovery states
    max_updates: Optional[int]

    def __post_init__(self):
        _check_at_least_one(self, 'grad_accum_steps', 'log_interval')


@dataclass(frozen=True)
class ModelSettings:
    """Which model, built how: shared by training and evaluation."""
    model: Optional[str]  # evaluation: None for a checkpoint's
    pretrained: bool
    model_kwargs: Mapping[str, Any]
    num_classes: Optional[int]  # unset: the dataset's (or a checkpoint's)
    channels_last: bool
    torchcompile: Optional[str]  # a torch.compile backend


@dataclass(frozen=True)
class ModelTrainingSettings:
    """How the model is trained: its dropout rates, recomputation, synchronised batch norms."""
    drop: float
    drop_path: Optional[float]  # unset: the model's
    grad_checkpointing: bool
    sync_bn: bool


@dataclass(frozen=True)
class EmaSettings:
    """The exponential moving average of the weights."""
    model_ema: bool
    model_ema_decay: float
    model_ema_warmup: bool


@dataclass(frozen=True)
class RunSettings:
    """Where a run writes, what it keeps, and which run it continues."""
    output: str
    experiment: str
    eval_metric: str
    checkpoint_hist: int
    resume: str

    def __post_init__(self):
        _check_at_least_one(self, 'checkpoint_hist')


@dataclass(frozen=True)
class TrainingConfig:
    """A training run's configuration; `recorded` is its config.yaml: a config that repeats the run."""
    data: DataSettings
    splits: SplitSettings
    augment: AugmentSettings
    mixup: MixupSettings
    batch: BatchSettings
    optimizer: OptimizerSettings
    schedule: ScheduleSettings
    loop: LoopSettings
    model: ModelSettings
    model_training: ModelTrainingSettings
    ema: EmaSettings
    run: RunSettings
    recorded: Mapping[str, Any]


@dataclass(frozen=True)
class EvalSettings:
    """What validate.py evaluates on, with which weights, and where its results go."""
    split: str
    num_samples: Optional[int]
    checkpoint: Tuple[str, ...]  # several: their ensemble
    use_ema: bool
    trust_pickle: bool
    batch_size: int
    reparam: bool
    results_file: str


@dataclass(frozen=True)
class EvalConfig:
    data: DataSettings
    model: ModelSettings
    evaluation: EvalSettings


def resolve_device(flags: Flags) -> DeviceSettings:
    return _pick(DeviceSettings, flags)


def resolve_batch(batch_size: Optional[int], global_batch_size: int, validation_batch_size: Optional[int],
                  world_size: int, grad_accum_steps: int, mixup: bool) -> BatchSettings:
    """Settle the batch per process and the global batch (per optimizer update) with each other, or say why not.

    An explicit `batch_size` sets the global batch; otherwise `global_batch_size` is divided over processes and
    accumulation steps, and must divide evenly. The evaluation batch is the training batch unless given.
    """
    per_update = world_size * grad_accum_steps
    if batch_size is not None:
        global_batch_size = batch_size * per_update
    elif global_batch_size % per_update:
        raise ConfigError(f'a global batch of {global_batch_size} does not divide over {world_size} '
                          f'process(es) x {grad_accum_steps} accumulation step(s); set --global-batch-size '
                          f'to a multiple of {per_update} or --batch-size per process')
    else:
        batch_size = global_batch_size // per_update
    if batch_size < 1:
        raise ConfigError(f'the batch per process must be at least 1, got {batch_size}')
    if mixup and batch_size % 2:
        raise ConfigError(f'mixup and cutmix pair the samples of a batch: the batch per process ({batch_size}) '
                          'must be even')
    return BatchSettings(batch_size, global_batch_size, validation_batch_size or batch_size)


def scaled_lr(lr_base: float, lr_base_size: int, global_batch_size: int, lr_base_scale: str = 'linear') -> float:
    """`lr_base`, the learning rate at a global batch of `lr_base_size`, scaled to `global_batch_size`."""
    ratio = global_batch_size / lr_base_size
    return lr_base * (math.sqrt(ratio) if lr_base_scale == 'sqrt' else ratio)


def adapts_to_input_size(model_name: str, model_kwargs: Mapping[str, Any]) -> bool:
    """Whether the model resizes its maps to those of the size it is built for (`img_size`, downsample='smp'),
    found by building it on the meta device: no memory, no random draws."""
    try:
        with torch.device('meta'):
            model = create_model(model_name, **model_kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return getattr(model, 'adapts_to_input_size', False)


def training_model_kwargs(flags: Flags) -> Dict[str, Any]:
    """The model arguments of a run: --model-kwargs, with `img_size` the training input size for a model that
    adapts to the input size, so that the run records the size its stages are trained for (evaluating it at
    other sizes resizes to it)."""
    model_kwargs = dict(flags['model_kwargs'])
    if flags['input_size'] is None or 'img_size' in model_kwargs or \
            not adapts_to_input_size(flags['model'], model_kwargs):
        return model_kwargs
    return {**model_kwargs, 'img_size': recorded_img_size(flags['input_size'])}


def recorded_img_size(input_size: Sequence[int]) -> Union[int, List[int]]:
    """The `img_size` a run gives a model that adapts to the input size: its training input size [C, H, W]."""
    height, width = input_size[1:]
    return height if height == width else [height, width]


def elastic_batch_flags(flags: Flags, saved: SavedBatch, world_size: int) -> Flags:
    """The batch flags of a run resumed on `world_size` processes: its batch per process and global batch, the
    accumulation steps taking up the difference in processes (`flags` as they are on as many processes)."""
    if saved.world_size == world_size:
        return flags
    per_update = saved.batch_size * world_size
    if saved.global_batch_size % per_update:
        raise ConfigError(
            f'the run to resume has a global batch of {saved.global_batch_size} in batches of {saved.batch_size} on '
            f'each of {saved.world_size} process(es); {world_size} cannot keep it ({saved.global_batch_size} is no '
            f'multiple of {saved.batch_size} x {world_size}): resume on a number of processes that divides '
            f'{saved.global_batch_size // saved.batch_size}')
    return {**flags, 'batch_size': saved.batch_size, 'global_batch_size': saved.global_batch_size,
            'grad_accum_steps': saved.global_batch_size // per_update}


def series_flags(flags: Flags) -> Flags:
    """The flags of a run on a time-series dataset, resolved from its training data: the series length (unset:
    the longest training series'), the model's input channels and kernel length (unless --model-kwargs sets them),
    and an `auto` batch and number of epochs from the number of training series (`auto_batch_and_epochs`)."""
    try:
        summary = summarize_training_series(flags['dataset'], flags['data_dir'], flags['val_fraction'], flags['seed'],
                                            flags['sample_rate'])
    except ValueError as e:
        raise ConfigError(str(e)) from e
    length = flags['series_length'] or summary.longest
    model_kwargs = {'in_chans': summary.num_channels, 'kernel_size': length, **flags['model_kwargs']}
    batch, epochs = auto_batch_and_epochs(summary.num_train)
    return {**flags, 'series_length': length, 'model_kwargs': model_kwargs,
            'global_batch_size': batch if flags['global_batch_size'] == AUTO else flags['global_batch_size'],
            'epochs': epochs if flags['epochs'] == AUTO else flags['epochs']}


def resolve_training_config(flags: Flags, world_size: int, resumed: Optional[SavedBatch] = None) -> TrainingConfig:
    """The training flags' configuration on `world_size` processes: the batches settled over the processes (those
    of the `resumed` run, on another number of processes: `elastic_batch_flags`), the learning rate scaled to the
    global batch unless --lr sets it, the training input size given to a model that adapts to it
    (`training_model_kwargs`), the data's shapes and sizes to a run on a time series dataset (`series_flags`)."""
    if is_series_dataset(flags['dataset']):
        flags = series_flags(flags)
    elif AUTO in (flags['epochs'], flags['global_batch_size']):
        raise ConfigError(f"--epochs {AUTO} and --global-batch-size {AUTO} follow the size of a time-series dataset "
                          f"(--dataset ts/NAME, ...): {flags['dataset'] or flags['data_dir']} needs numbers")
    if resumed is not None:
        flags = elastic_batch_flags(flags, resumed, world_size)
    loop, mixup = _pick(LoopSettings, flags), _pick(MixupSettings, flags)
    batch = resolve_batch(flags['batch_size'], flags['global_batch_size'], flags['validation_batch_size'],
                          world_size, loop.grad_accum_steps, mixup.enabled)
    lr = flags['lr'] if flags['lr'] is not None else scaled_lr(
        flags['lr_base'], flags['lr_base_size'], batch.global_batch_size, flags['lr_base_scale'])
    # the values the run used, as the flags that repeat it
    used = dict(flags, batch_size=batch.batch_size, global_batch_size=batch.global_batch_size, lr=lr,
                model_kwargs=training_model_kwargs(flags))
    recorded: Dict[str, Any] = {k: plain(v) for k, v in used.items() if k not in NOT_CONFIGURABLE}
    return TrainingConfig(
        data=_pick(DataSettings, flags), splits=_pick(SplitSettings, flags), augment=_pick(AugmentSettings, flags),
        mixup=mixup, batch=batch, optimizer=_pick(OptimizerSettings, flags, lr=lr),
        schedule=_pick(ScheduleSettings, flags), loop=loop, model=_pick(ModelSettings, used),
        model_training=_pick(ModelTrainingSettings, flags), ema=_pick(EmaSettings, flags),
        run=_pick(RunSettings, flags), recorded=MappingProxyType(recorded))


def resolve_eval_config(flags: Flags) -> EvalConfig:
    """The validation flags' configuration."""
    return EvalConfig(data=_pick(DataSettings, flags), model=_pick(ModelSettings, flags),
                      evaluation=_pick(EvalSettings, flags))
