"""Real data: MNIST, Fashion-MNIST and CIFAR readers, a seeded validation split, a tensor-resident loader,
and the ImageNet folder reader with its streaming loader."""

from neuroplastic.data.datasets import DATASETS, DataSplits, list_datasets, load_dataset, split_indices
from neuroplastic.data.download import ChecksumError, DatasetNotFoundError, resolve_data_dir
from neuroplastic.data.imagenet import ImageFolderLoader, ImageFolderSplits, load_image_folder, scan_image_folder
from neuroplastic.data.loader import TensorLoader

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataSplits",
    "DatasetNotFoundError",
    "ImageFolderLoader",
    "ImageFolderSplits",
    "TensorLoader",
    "list_datasets",
    "load_dataset",
    "load_image_folder",
    "resolve_data_dir",
    "scan_image_folder",
    "split_indices",
]
