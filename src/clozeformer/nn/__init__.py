"""The shared core every model composes: attention, feed-forward, layers, init."""

from clozeformer.nn.attention import (KV, Attention, Cache, additive, causal_mask, padding_mask, segment_ids,
                                      segment_mask, segment_positions, segment_starts)
from clozeformer.nn.layers import FeedForward, Stack, TransformerLayer, init_weights, num_parameters

__all__ = ["Attention", "Cache", "FeedForward", "KV", "Stack", "TransformerLayer", "additive", "causal_mask",
           "init_weights", "num_parameters", "padding_mask", "segment_ids", "segment_mask", "segment_positions",
           "segment_starts"]
