"""What a compiled XLA program moves through memory, read off its optimized HLO text.

Every instruction of the entry computation that computes something (fusions, copies,
reductions, ...) reads its array operands and writes its result once. Summing those sizes
gives the traffic of the program when nothing stays in cache between kernels: the number
to compare with the one-pass traffic an update needs. XLA:CPU, for instance, writes each
output of an elementwise update in its own loop (no multi-output fusion), so Adam's
parameter loop reads back the moments the two moment loops just wrote.
"""

from __future__ import annotations

import re

_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
    "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8,
}  # fmt: skip
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(\S+)\s*=\s*(.+?)\s+([\w-]+)\((.*)$")
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all"}


def _shape_bytes(shape_text: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(shape_text):
        elements = 1
        for dim in filter(None, dims.split(",")):
            elements *= int(dim)
        total += elements * _BYTES.get(dtype, 4)
    return total


def entry_traffic(hlo_text: str) -> dict[str, int]:
    """Bytes read and written by the entry computation's instructions.

    Args:
      hlo_text: ``jax.jit(f).lower(...).compile().as_text()``.

    Returns:
      ``{"bytes": read + written, "kernels": instructions with array results (>= 1 KiB)}``.
    """
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}")]
    sizes: dict[str, int] = {}
    traffic = kernels = 0
    for line in entry.splitlines()[1:]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode, rest = match.groups()
        result = _shape_bytes(shape)
        sizes[name] = result
        if opcode in _NO_TRAFFIC:
            continue
        arguments = rest.split("), ")[0] if "), " in rest else rest.rstrip(")")
        operands = re.findall(r"%([\w.\-]+)", arguments)
        traffic += result + sum(sizes.get(operand, 0) for operand in operands)
        kernels += result >= 1024
    return {"bytes": traffic, "kernels": kernels}
