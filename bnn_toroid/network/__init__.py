"""Networks: frozen binary networks (layers, evaluation, freezing from torch, files) and,
in :mod:`bnn_toroid.network.continuous`, the model of a real-valued torch network that the
analysis packages read it through."""
from . import continuous, residual_ops
from .core import BinaryNetwork, NetworkStack
from .files import FORMAT_VERSION, NetworkFileError, load, read_meta, save
from .freeze import from_torch
from .layers import BatchNormRecord, Conv2d, Dense, MaxPool2d, NetworkError, fold_sign_affine
from .residual import ResidualBinaryNetwork
from .recalibrate import can_recalibrate, infer_records, recalibrate

__all__ = ["BinaryNetwork", "NetworkStack", "BatchNormRecord", "Dense", "Conv2d", "MaxPool2d", "NetworkError",
           "NetworkFileError", "fold_sign_affine", "from_torch", "load", "save", "read_meta",
           "FORMAT_VERSION", "recalibrate", "can_recalibrate", "infer_records", "continuous",
           "ResidualBinaryNetwork", "residual_ops"]
