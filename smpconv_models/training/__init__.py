"""The paper's training recipe as library pieces; `train_imagenet.py` orchestrates them."""
from .checkpoint import (Checkpointer, latest_training_state, load_training_state, remove_leftovers,
                         restore_training_state)
from .config import (BUNDLED_DATASET, ConfigError, add_data_args, add_model_args, build_eval_parser, build_parser,
                     load_config, parse_args, parse_eval_args, resolve_batch_size, resolved_config)
from .data import (SeededAugmentation, create_datasets, create_eval_dataset, create_eval_loader, create_train_loader,
                   is_task, num_classes_of, set_epoch)
from .distributed import CrossProcessBatchNorm2d, rng_state, set_rng_state, sync_batchnorm
from .engine import Progress, evaluate, train_one_epoch
from .memory import keep_freed_memory_for_reuse
from .optim import (create_loss, create_mixup, create_optimizer, create_scheduler, mixup_enabled, param_groups,
                    scaled_lr)

__all__ = [
    'Checkpointer', 'latest_training_state', 'load_training_state', 'remove_leftovers', 'restore_training_state',
    'ConfigError',
    'add_data_args', 'add_model_args', 'build_eval_parser', 'build_parser', 'load_config', 'parse_args',
    'parse_eval_args', 'resolve_batch_size',
    'resolved_config', 'BUNDLED_DATASET', 'SeededAugmentation', 'create_datasets', 'create_eval_dataset',
    'create_eval_loader', 'create_train_loader', 'is_task', 'num_classes_of', 'set_epoch',
    'CrossProcessBatchNorm2d', 'rng_state', 'set_rng_state', 'sync_batchnorm', 'Progress',
    'evaluate', 'train_one_epoch', 'keep_freed_memory_for_reuse', 'create_loss', 'create_mixup', 'create_optimizer',
    'create_scheduler',
    'mixup_enabled', 'param_groups', 'scaled_lr',
]
