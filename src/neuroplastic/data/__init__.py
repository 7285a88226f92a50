"""Real data: MNIST, Fashion-MNIST and CIFAR readers, a seeded validation split, a tensor-resident loader."""

from neuroplastic.data.datasets import DATASETS, DataSplits, list_datasets, load_dataset, split_indices
from neuroplastic.data.download import ChecksumError, DatasetNotFoundError, resolve_data_dir
from neuroplastic.data.loader import TensorLoader

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataSplits",
    "DatasetNotFoundError",
    "TensorLoader",
    "list_datasets",
    "load_dataset",
    "resolve_data_dir",
    "split_indices",
]
