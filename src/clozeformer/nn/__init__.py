"""The shared core every model composes: attention, feed-forward, layers, init."""

from clozeformer.nn.attention import Attention, padding_mask
from clozeformer.nn.layers import FeedForward, TransformerLayer, init_weights, num_parameters

__all__ = ["Attention", "FeedForward", "TransformerLayer", "init_weights", "num_parameters", "padding_mask"]
