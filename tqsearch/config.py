"""Knobs shared by the kernels and the orchestration code."""

from __future__ import annotations

# LLVM fast-math flags for the kernels: reassociation lets reductions vectorize,
# but no `nnan`/`ninf`, so that infinities used as sentinels stay meaningful.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Rows coded per call when adding, so a progress bar can advance and peak memory
# stays bounded by the chunk, not the whole batch.
ADD_CHUNK = 65_536
