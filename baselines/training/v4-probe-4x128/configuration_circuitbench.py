"""transformers configuration of a circuitbench model folder (pip install circuitbench)."""

from circuitbench.models.hf_automodel import CircuitbenchConfig

__all__ = ["CircuitbenchConfig"]
