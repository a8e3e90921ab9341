"""A small pickle machine for state dicts: only the opcodes and globals a ``.pth``
file needs, with every cost bounded by the bytes it reads.

Python's own unpickler trusts the stream in ways a hostile file can use even when
``find_class`` allows nothing dangerous: a memo index of 2**32 makes it allocate
gigabytes, ``BUILD`` sets attributes on whatever object is on the stack (the
allowed globals themselves, so one file changes how every later file is read),
and colliding dictionary keys cost quadratic time. This machine instead

* resolves globals only from the table it is given, and never mutates them:
  ``BUILD`` is accepted only on an ``OrderedDict`` this load created (the state,
  a state dict's ``_metadata``, is dropped), ``APPEND``/``SETITEM`` only on lists
  and dicts this load created;
* keeps the memo in a dict (an index costs one entry whatever its value);
* checks each length (strings, bytes, frames) against the bytes left before
  reading, and bounds integers to :data:`MAX_INT_BYTES` bytes;
* accepts as dict keys only ``str``, ``bytes``, ``None``, ``bool`` and integers
  below 2**31 (hashes that cannot be made to collide);
* stops after :data:`MAX_OPS` opcodes or :data:`MAX_OBJECTS` created objects
  (a state dict needs about 25 opcodes and 10 objects per tensor).

Anything else is a :class:`PickleError` naming the opcode and its offset.
"""

from __future__ import annotations

import collections
import gc
import struct
from typing import Callable

MAX_OPS = 500_000
MAX_OBJECTS = 100_000
MAX_INT_BYTES = 16
MAX_GLOBAL_NAME = 200
MAX_CALL_ARGS = 8


class PickleError(ValueError):
    """The pickle is malformed, or asks for more than a state dict needs."""


class UnsafeGlobal(PickleError):
    """The pickle references a global outside the allowed table; nothing was called."""


_SAFE_KEY_TYPES = (str, bytes, bool, type(None))


class _Mark:
    __slots__ = ()


_MARK = _Mark()


class Machine:
    """Run one pickle from ``read`` (``read(n)`` returns at most ``n`` bytes).

    ``globals_``: ``{(module, name): object}``, the only globals the pickle may name.
    ``calls``: the subset of those objects ``REDUCE`` may call (with at most
    :data:`MAX_CALL_ARGS` positional arguments). ``persistent``: called with each
    persistent id (``BINPERSID``). ``available``: bytes the stream may still
    supply (lengths are checked against it before reading).
    """

    def __init__(self, read: Callable[[int], bytes], available: int, globals_: dict,
                 calls: set, persistent: Callable):
        self._read_raw = read
        self._left = available      # bytes the stream may still supply, not yet buffered
        self._buf = b""
        self._i = 0                 # next unread byte of _buf
        self._globals = globals_
        self._calls = {id(c) for c in calls}
        self._persistent = persistent
        self._fresh_odicts: set[int] = set()   # OrderedDicts this load made (BUILD target)
        self._owned: set[int] = set()          # lists/dicts this load made (mutable)
        self._keep: list = []                  # keeps ids above valid
        self.objects = 0
        self._consumed = 0          # bytes dropped from the front of _buf

    @property
    def pos(self) -> int:
        """Bytes consumed so far (where the pickle ended, after :meth:`run`)."""
        return self._consumed + self._i

    # -- reading ---------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        i = self._i
        if i + n <= len(self._buf):
            self._i = i + n
            return self._buf[i: i + n]
        have = len(self._buf) - i
        if n < 0 or n - have > self._left:
            raise PickleError(f"a length of {n} bytes at offset {self.pos} runs past the "
                              f"{have + self._left} bytes left (truncated or corrupt)")
        # refill in chunks (at least 64 KiB, never past what the stream may supply)
        want = min(self._left, max(n - have, 1 << 16))
        chunk = self._read_raw(want)
        self._left -= len(chunk)
        self._consumed += i
        self._buf = self._buf[i:] + chunk
        self._i = 0
        if len(self._buf) < n:
            raise PickleError(f"truncated at offset {self.pos}")
        self._i = n
        return self._buf[:n]

    def _unpack(self, fmt: str):
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _line(self) -> str:
        out = bytearray()
        while True:
            c = self._read(1)
            if c == b"\n":
                break
            out += c
            if len(out) > MAX_GLOBAL_NAME:
                raise PickleError(f"global name longer than {MAX_GLOBAL_NAME} bytes")
        try:
            return out.decode("ascii")
        except UnicodeDecodeError:
            raise PickleError("global name is not ASCII") from None

    def _text(self, n: int, encoding: str = "utf-8") -> str:
        try:
            return self._read(n).decode(encoding)
        except UnicodeDecodeError:
            raise PickleError(f"string before offset {self.pos} is not valid "
                              f"{encoding}") from None

    # -- objects ---------------------------------------------------------------
    def _new(self, obj, owned: bool = False):
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise PickleError(f"more than {MAX_OBJECTS} objects; a state dict needs far "
                              f"fewer")
        if owned:
            self._owned.add(id(obj))
            self._keep.append(obj)
        return obj

    def _owned_list(self, obj):
        if type(obj) is not list or id(obj) not in self._owned:
            raise PickleError(f"append to a {type(obj).__name__} at offset {self.pos}")
        return obj

    def _owned_dict(self, obj):
        if not isinstance(obj, dict) or id(obj) not in self._owned:
            raise PickleError(f"item assignment to a {type(obj).__name__} at offset "
                              f"{self.pos}")
        return obj

    @staticmethod
    def _key(k):
        if isinstance(k, _SAFE_KEY_TYPES) or (type(k) is int and -2**31 <= k < 2**31):
            return k
        raise PickleError(f"dictionary key of type {type(k).__name__} "
                          f"({str(k)[:40]!r}); a state dict's keys are names")

    def _global(self, module: str, name: str):
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise UnsafeGlobal(
                f"refusing to load: the pickle references {module}.{name}, which a state "
                f"dict does not need (allowed: "
                f"{sorted(f'{m}.{n}' for m, n in self._globals)}); nothing was executed"
            ) from None

    def _pop_mark(self, stack: list, marks: list) -> list:
        if not marks:
            raise PickleError(f"no MARK before offset {self.pos}")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    # -- the loop --------------------------------------------------------------
    def run(self):
        """The unpickled object; :class:`PickleError` if the stream is refused."""
        enabled = gc.isenabled()
        gc.disable()  # containers only ever grow here; collections would make it quadratic
        try:
            return self._run()
        finally:
            if enabled:
                gc.enable()

    def _run(self):
        stack: list = []
        marks: list = []
        memo: dict = {}
        ops = 0
        read, unpack = self._read, self._unpack
        while True:
            ops += 1
            if ops > MAX_OPS:
                raise PickleError(f"more than {MAX_OPS} opcodes; a state dict needs far fewer")
            i = self._i
            if i < len(self._buf):  # the common case, inlined
                op = self._buf[i: i + 1]
                self._i = i + 1
            else:
                op = read(1)
            at = self.pos - 1
            try:
                if op == b".":                                   # STOP
                    if len(stack) != 1 or marks:
                        raise PickleError("STOP with a malformed stack")
                    return stack[0]
                if op == b"\x80":                                # PROTO
                    if read(1)[0] > 5:
                        raise PickleError("pickle protocol above 5")
                elif op == b"\x95":                              # FRAME: a length hint
                    n = unpack("<Q")
                    left = len(self._buf) - self._i + self._left
                    if n > left:
                        raise PickleError(f"frame of {n} bytes but {left} left")
                elif op == b"(":
                    marks.append(len(stack))
                elif op == b"0":
                    if not stack or (marks and marks[-1] == len(stack)):
                        raise PickleError("POP from an empty stack")
                    stack.pop()
                elif op == b"1":
                    self._pop_mark(stack, marks)
                elif op == b"2":
                    stack.append(stack[-1])
                elif op == b"J":
                    stack.append(unpack("<i"))
                elif op == b"K":
                    stack.append(read(1)[0])
                elif op == b"M":
                    stack.append(unpack("<H"))
                elif op in (b"\x8a", b"\x8b"):                   # LONG1, LONG4
                    n = read(1)[0] if op == b"\x8a" else unpack("<i")
                    if not 0 <= n <= MAX_INT_BYTES:
                        raise PickleError(f"integer of {n} bytes (at most {MAX_INT_BYTES})")
                    stack.append(int.from_bytes(read(n), "little", signed=True))
                elif op == b"N":
                    stack.append(None)
                elif op == b"\x88":
                    stack.append(True)
                elif op == b"\x89":
                    stack.append(False)
                elif op == b"G":
                    stack.append(unpack(">d"))
                elif op == b"\x8c":                              # SHORT_BINUNICODE
                    stack.append(self._new(self._text(read(1)[0])))
                elif op == b"X":
                    stack.append(self._new(self._text(unpack("<I"))))
                elif op == b"\x8d":
                    stack.append(self._new(self._text(unpack("<Q"))))
                elif op == b"U":                                 # SHORT_BINSTRING (py2 str)
                    stack.append(self._new(self._text(read(1)[0], "latin-1")))
                elif op == b"T":
                    stack.append(self._new(self._text(unpack("<i"), "latin-1")))
                elif op == b"C":
                    stack.append(self._new(read(read(1)[0])))
                elif op == b"B":
                    stack.append(self._new(read(unpack("<I"))))
                elif op == b"\x8e":
                    stack.append(self._new(read(unpack("<Q"))))
                elif op == b")":
                    stack.append(())
                elif op == b"t":
                    stack.append(self._new(tuple(self._pop_mark(stack, marks))))
                elif op in (b"\x85", b"\x86", b"\x87"):          # TUPLE1..3
                    n = op[0] - 0x84
                    if len(stack) - (marks[-1] if marks else 0) < n:
                        raise PickleError("TUPLE from too short a stack")
                    items = tuple(stack[-n:])
                    del stack[-n:]
                    stack.append(self._new(items))
                elif op == b"]":
                    stack.append(self._new([], owned=True))
                elif op == b"l":
                    stack.append(self._new(self._pop_mark(stack, marks), owned=True))
                elif op == b"a":
                    v = stack.pop()
                    self._owned_list(stack[-1]).append(v)
                elif op == b"e":
                    items = self._pop_mark(stack, marks)
                    self._owned_list(stack[-1]).extend(items)
                elif op == b"}":
                    stack.append(self._new({}, owned=True))
                elif op == b"d":
                    items = self._pop_mark(stack, marks)
                    d = self._new({}, owned=True)
                    self._setitems(d, items)
                    stack.append(d)
                elif op == b"s":
                    v = stack.pop()
                    k = stack.pop()
                    self._owned_dict(stack[-1])[self._key(k)] = v
                elif op == b"u":
                    items = self._pop_mark(stack, marks)
                    self._setitems(self._owned_dict(stack[-1]), items)
                elif op == b"c":                                 # GLOBAL
                    module = self._line()
                    stack.append(self._global(module, self._line()))
                elif op == b"\x93":                              # STACK_GLOBAL
                    name = stack.pop()
                    module = stack.pop()
                    if not (isinstance(module, str) and isinstance(name, str)):
                        raise PickleError("STACK_GLOBAL with non-string names")
                    stack.append(self._global(module, name))
                elif op == b"R":                                 # REDUCE
                    args = stack.pop()
                    fn = stack.pop()
                    if id(fn) not in self._calls:
                        raise PickleError(f"call of a {type(fn).__name__} that is not an "
                                          f"allowed function")
                    if type(args) is not tuple or len(args) > MAX_CALL_ARGS:
                        raise PickleError("malformed call arguments")
                    if fn is collections.OrderedDict:
                        if args:  # pickle writes OrderedDict(), then SETITEMS (keys checked)
                            raise PickleError("OrderedDict called with arguments")
                        out = self._new(collections.OrderedDict(), owned=True)
                        self._fresh_odicts.add(id(out))
                    else:
                        out = self._new(fn(*args))
                    stack.append(out)
                elif op == b"b":                                 # BUILD
                    state = stack.pop()
                    target = stack[-1]
                    if id(target) not in self._fresh_odicts or not (
                            state is None or isinstance(state, (dict, tuple))):
                        raise PickleError(f"BUILD on a {type(target).__name__}: a file "
                                          f"may not set state on objects it did not make")
                    # a state dict's _metadata (version numbers) is not needed: dropped
                elif op == b"Q":                                 # BINPERSID
                    stack.append(self._new(self._persistent(stack.pop())))
                elif op in (b"q", b"r", b"\x94"):                # BINPUT, LONG_BINPUT, MEMOIZE
                    i = (read(1)[0] if op == b"q" else unpack("<I") if op == b"r"
                         else len(memo))
                    if not stack:
                        raise PickleError("memo put from an empty stack")
                    memo[i] = stack[-1]
                elif op in (b"h", b"j"):                         # BINGET, LONG_BINGET
                    i = read(1)[0] if op == b"h" else unpack("<I")
                    if i not in memo:
                        raise PickleError(f"memo index {i} was never stored")
                    stack.append(memo[i])
                else:
                    raise PickleError(f"opcode {op!r} is not used by state dicts")
            except IndexError:
                raise PickleError(f"stack underflow at offset {at} (opcode {op!r})") from None

    def _setitems(self, d: dict, items: list):
        if len(items) % 2:
            raise PickleError("odd number of items for a dict")
        for k, v in zip(items[::2], items[1::2]):
            d[self._key(k)] = v
