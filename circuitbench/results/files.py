"""Atomic, group-readable writes for results: `circuitbench.files`, re-exported where storage code looks for it."""

from circuitbench.files import FILE_MODE, atomic_path, os_error_reason, write_text_atomic

__all__ = ["FILE_MODE", "atomic_path", "os_error_reason", "write_text_atomic"]
