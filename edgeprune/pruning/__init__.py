"""Structured (filter) pruning: channel groups, importance criteria, SAP counts, pruned-model manifests.

graph = PruningGraph(model, example_input)           # groups of coupled channels
scores = get_importance("l1").scores(model, graph)   # {group id: one score per unit}
graph.prune_many({gid: idxs, ...})                    # physical removal, recorded in graph.history
save_pruned(model, build_manifest(original, model, graph.history, example_input), out_dir)
"""

from __future__ import annotations

from .graph import ChannelGroup, PruneStep, PruningGraph, count_params_flops, register_custom_layer
from .importance import (
    Importance,
    available_importances,
    get_importance,
    normalise_per_layer,
    register_importance,
)
from .manifest import build_manifest, layer_channels, load_pruned, rebuild, save_pruned
from .sap import pq_index, sap_keep_bound, sap_prune_count

__all__ = [
    "ChannelGroup",
    "Importance",
    "PruneStep",
    "PruningGraph",
    "available_importances",
    "build_manifest",
    "count_params_flops",
    "get_importance",
    "layer_channels",
    "load_pruned",
    "normalise_per_layer",
    "pq_index",
    "rebuild",
    "register_custom_layer",
    "register_importance",
    "sap_keep_bound",
    "sap_prune_count",
    "save_pruned",
]
