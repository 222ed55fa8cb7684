"""transformers model of a circuitbench model folder: circuitbench's own (pip install circuitbench)."""

from circuitbench.models.hf_automodel import CircuitbenchConfig, CircuitbenchForCausalLM

__all__ = ["CircuitbenchConfig", "CircuitbenchForCausalLM"]
