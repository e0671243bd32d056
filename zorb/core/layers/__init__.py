"""Layer types, registered by the name a layer spec's ``type`` uses (``register_layer`` adds more;
docs/layers.md describes what a layer implements)."""

from zorb.core.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from zorb.core.layers.base import LAYERS, Layer, layer_class, register_layer
from zorb.core.layers.conv2d import Conv2D, average_patches, extract_patches, sum_patches
from zorb.core.layers.dense import Dense, ParametricLayer
from zorb.core.layers.discrete import HardTanh, Quantize, Sign, Step
from zorb.core.layers.reshape import Flatten, Identity

for _cls in (Dense, Conv2D, Flatten, Sigmoid, Tanh, ReLU, Softmax, Identity, Step, Sign, Quantize, HardTanh):
    register_layer(_cls)

__all__ = [
    "LAYERS", "Layer", "ParametricLayer", "layer_class", "register_layer", "Dense", "Conv2D", "Flatten", "Identity",
    "Sigmoid", "Tanh", "ReLU", "Softmax", "Step", "Sign", "Quantize", "HardTanh", "extract_patches", "sum_patches",
    "average_patches",
]
