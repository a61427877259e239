"""A sequence's evaluated state copied out of the llama.cpp context and back (the prefix cache's entries)."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from llava_edge.prefix_cache import PrefixState


def snapshot(context: Any, n_past: int) -> PrefixState:
    """Sequence 0's state, ``n_past`` positions long."""
    size = llama_cpp.llama_state_seq_get_size(context, 0)
    data = bytearray(size)  # llama.cpp writes straight into it: one copy of a state of ~360 MB, not three
    view = (ctypes.c_uint8 * size).from_buffer(data)
    written = llama_cpp.llama_state_seq_get_data(context, view, size, 0)
    del view  # releases the buffer so it may shrink
    del data[written:]
    return PrefixState(n_past, data)


def restore(context: Any, state: PrefixState) -> bool:
    """Put ``state`` back as sequence 0; on failure the context is cleared and False returned."""
    view = (ctypes.c_uint8 * len(state.data)).from_buffer(state.data)  # no copy
    restored = llama_cpp.llama_state_seq_set_data(context, view, len(state.data), 0)
    del view
    if restored == 0:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        return False
    return True
