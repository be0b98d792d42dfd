"""Guarded copies of kernel arguments for the emulator's bounds-checked mode.

Each array is copied into its own anonymous mapping laid out as

    [PROT_NONE page][pad + canary][data (16-byte aligned)][canary < 16 bytes][PROT_NONE page]

so a read or write past the end (beyond the < 16 bytes of alignment slack) or before the start
of the page faults on a guard page; the emulator's SIGSEGV handler turns that into an error with
the faulting address, which :meth:`GuardedBuffers.locate` maps back to the argument. Writes into
the slack (and into the padding before the data) are caught afterwards by checking the canaries.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

_PAGE = mmap.PAGESIZE
_CANARY = 0xA5
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_PROT_NONE, _PROT_RW = 0, 3
_MAP_PRIVATE_ANON = 0x02 | 0x20


class _Guarded:
    def __init__(self, arr: np.ndarray):
        self.nbytes = arr.nbytes
        padded = (self.nbytes + 15) // 16 * 16
        data_pages = max(1, -(-padded // _PAGE))
        self.total = (data_pages + 2) * _PAGE
        base = _libc.mmap(None, self.total, _PROT_RW, _MAP_PRIVATE_ANON, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise MemoryError(f"mmap of {self.total} bytes for a guarded buffer failed")
        self.base = base
        self.lo_guard = base
        self.hi_guard = base + (1 + data_pages) * _PAGE
        self.data = self.hi_guard - padded
        ctypes.memset(base + _PAGE, _CANARY, data_pages * _PAGE)
        ctypes.memmove(self.data, arr.ctypes.data, self.nbytes)
        _libc.mprotect(self.lo_guard, _PAGE, _PROT_NONE)
        _libc.mprotect(self.hi_guard, _PAGE, _PROT_NONE)

    def result(self, like: np.ndarray) -> np.ndarray:
        out = np.empty_like(like)
        ctypes.memmove(out.ctypes.data, self.data, self.nbytes)
        return out

    def canary_damage(self) -> str | None:
        """Where a write outside the data (but inside the mapped pages) happened, if any."""
        before = ctypes.string_at(self.lo_guard + _PAGE, self.data - self.lo_guard - _PAGE)
        after = ctypes.string_at(self.data + self.nbytes, self.hi_guard - self.data - self.nbytes)
        bad_after = [i for i, b in enumerate(after) if b != _CANARY]
        if bad_after:
            return f"write {bad_after[0]} bytes past the end (inside the alignment padding)"
        bad_before = [i for i, b in enumerate(before) if b != _CANARY]
        if bad_before:
            return f"write {len(before) - bad_before[0]} bytes before the start"
        return None

    def free(self) -> None:
        _libc.munmap(self.base, self.total)


class GuardedBuffers:
    """Guarded copies of the array arguments of one launch (``None`` for scalars)."""

    def __init__(self, args):
        self.items: list[_Guarded | None] = []
        try:
            for a in args:
                self.items.append(_Guarded(a) if isinstance(a, np.ndarray) else None)
        except BaseException:
            self.free()
            raise

    def pointer(self, i: int) -> int:
        return self.items[i].data  # type: ignore[union-attr]

    def locate(self, addr: int) -> tuple[int, str] | None:
        """(argument index, description) of a faulting address in a guard page, else None."""
        for i, g in enumerate(self.items):
            if g is None:
                continue
            if g.hi_guard <= addr < g.hi_guard + _PAGE:
                past = addr - (g.data + g.nbytes)
                return i, f"{past} bytes past the end (byte offset {addr - g.data})"
            if g.lo_guard <= addr < g.lo_guard + _PAGE:
                return i, f"{g.data - addr} bytes before the start"
        return None

    def free(self) -> None:
        for g in self.items:
            if g is not None:
                g.free()
        self.items = []
