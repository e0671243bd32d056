"""Layer types, registered by the name a layer spec's ``type`` uses."""

from zorb.core.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from zorb.core.layers.base import Layer
from zorb.core.layers.conv2d import Conv2D, average_patches, extract_patches, sum_patches
from zorb.core.layers.dense import Dense, ParametricLayer
from zorb.core.layers.reshape import Flatten, Identity

LAYERS = {cls.kind: cls for cls in (Dense, Conv2D, Flatten, Sigmoid, Tanh, ReLU, Softmax, Identity)}

__all__ = [
    "LAYERS", "Layer", "ParametricLayer", "Dense", "Conv2D", "Flatten", "Identity", "Sigmoid", "Tanh",
    "ReLU", "Softmax", "extract_patches", "sum_patches", "average_patches",
]
