"""What we study: activations, networks, regularizers, resets."""
from plasticity.activations import ACTIVATIONS, get_activation
from plasticity.networks import NETWORKS, Network, layer_params, make_network
from plasticity.regularizers import REGULARIZERS, diagonal_fisher, consolidate, regularized

__all__ = ["ACTIVATIONS", "get_activation", "NETWORKS", "Network", "layer_params",
           "make_network", "REGULARIZERS", "regularized", "diagonal_fisher", "consolidate"]
