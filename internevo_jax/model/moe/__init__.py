"""Mixture of experts: settings, routing, grouped matmuls, the expert computation and the layer."""
