"""The numba kernels of the PDQ index: LLVM intrinsics, table builds and the lookup.

Every numba-compiled function of the index lives in this one module on purpose. The
kernels are compiled with ``cache=True``, and numba invalidates a cached kernel only
when the file that defines it changes: an intrinsic, an inlined helper or a global
constant (the slot encoding) read from another module could change while the cached
machine code kept the old one. One file keeps "edit anything, recompile everything";
that is why this module runs past the ~400 lines the project otherwise keeps to.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["MAX_ROWS", "build_chunk", "gather_rows", "lookup", "lookup_holding_gil"]

# Slot encoding (uint32). Rows are < 2**31.
_EMPTY = 0xFFFFFFFF  # empty bucket
_MULTI = 0x80000000  # tag of a bucket with >= 2 rows: _MULTI | count code << 27 | offset
_COUNT_SHIFT = 27
_OFFSET_MASK = (1 << _COUNT_SHIFT) - 1  # overflow offset within the chunk's run array
_MAX_CODED_COUNT = 16  # larger buckets keep their size in front of their run (code 0)
_RUN_PAD = 8  # runs are copied 8 rows at a time: padding keeps the last copy in bounds

# Loads issued ahead by the gather loops, tuned at N=10M (64-192 slots, 32-64 runs and
# 128-256 rows ahead are all within ~20% of the best).
_AHEAD_SLOTS = 96
_AHEAD_RUNS = 32
_AHEAD_ROWS = 128

MAX_ROWS = _MULTI
"""Rows a static table can address: a slot holding a row number must stay below the
multi-row tag."""


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """llvm.ctpop: numba has no popcount of its own; this compiles to one POPCNT."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
        return builder.call(fn, [args[0]])

    return sig, codegen


@intrinsic
def _prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """llvm.prefetch of ``arr[idx]`` (1-D arrays) into L2: lookups are bound by cache
    misses on random addresses, and issuing them early keeps many in flight at once.
    Prefetching into L2 (prefetcht1) rather than L1 let more misses overlap: 42.6 -> 33
    us per lookup at N=10M."""
    if not isinstance(arr, types.Array) or arr.ndim != 1:
        return None
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read (0), temporal locality 2 (L2 and out), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _distance(typingctx, arr, idx, q0, q1, q2, q3):  # type: ignore[no-untyped-def]
    """Hamming distance from ``arr[idx:idx+4]`` (a uint64 row) to ``(q0, q1, q2, q3)``
    with one 32-byte vector load: four scalar loads of a row still being fetched cost
    measurably more than one."""
    if not isinstance(arr, types.Array) or arr.ndim != 1:
        return None
    sig = types.int64(arr, types.intp, types.uint64, types.uint64, types.uint64, types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [args[1]], wraparound=False)
        i64 = ir.IntType(64)
        v4 = ir.VectorType(i64, 4)
        row = builder.load(builder.bitcast(ptr, v4.as_pointer()), align=8)
        query = ir.Constant(v4, ir.Undefined)
        for k in range(4):
            query = builder.insert_element(query, args[2 + k], ir.Constant(ir.IntType(32), k))
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v4, [v4]), "llvm.ctpop.v4i64")
        total = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [v4]), "llvm.vector.reduce.add.v4i64"
        )
        return builder.call(total, [builder.call(ctpop, [builder.xor(row, query)])])

    return sig, codegen


@intrinsic
def _copy8(typingctx, src, src_idx, dst, dst_idx):  # type: ignore[no-untyped-def]
    """``dst[dst_idx:+8] = src[src_idx:+8]`` (uint32) as one unaligned 32-byte load and
    store: an overflow run (usually 2-4 rows) is then one load, not one per row."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.uint32 for a in (src, dst)):
        return None
    sig = types.void(src, types.intp, dst, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        src_ty, _, dst_ty, _ = signature.args
        s = context.make_array(src_ty)(context, builder, args[0])
        d = context.make_array(dst_ty)(context, builder, args[2])
        sp = cgutils.get_item_pointer(context, builder, src_ty, s, [args[1]], wraparound=False)
        dp = cgutils.get_item_pointer(context, builder, dst_ty, d, [args[3]], wraparound=False)
        v8 = ir.VectorType(ir.IntType(32), 8)
        value = builder.load(builder.bitcast(sp, v8.as_pointer()), align=4)
        builder.store(value, builder.bitcast(dp, v8.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", cache=True)
def _pick(x0, x1, x2, x3, i):  # type: ignore[no-untyped-def]
    if i == 0:
        return x0
    if i == 1:
        return x1
    if i == 2:
        return x2
    return x3


@njit(inline="always", cache=True)
def _field(x0, x1, x2, x3, start, width):  # type: ignore[no-untyped-def]
    """Bits ``start .. start+width-1`` (MSB-first numbering) of a 256-bit value."""
    wi = start >> 6
    end = (start & 63) + width
    w = _pick(x0, x1, x2, x3, wi)
    if end <= 64:
        return (w >> np.uint64(64 - end)) & ((np.uint64(1) << np.uint64(width)) - np.uint64(1))
    low = end - 64
    high = w & ((np.uint64(1) << np.uint64(width - low)) - np.uint64(1))
    return (high << np.uint64(low)) | (_pick(x0, x1, x2, x3, wi + 1) >> np.uint64(64 - low))


@njit(inline="always", cache=True)
def _grow(a, n, need):  # type: ignore[no-untyped-def]
    """A copy of ``a[:n]`` with room for at least ``need`` elements."""
    b = np.empty(max(need, 2 * a.shape[0], 16), a.dtype)
    b[:n] = a[:n]
    return b


@njit(nogil=True, cache=True)
def build_chunk(hflat, n, start, width, offsets, postings, slots):  # type: ignore[no-untyped-def]
    """Bucket the rows by one chunk key into ``slots``; return the chunk's run array.

    ``offsets`` (uint32[2**width + 1]) and ``postings`` (uint32[n]) are scratch space
    for a counting sort (O(N), rows ascending within a bucket). Returns ``(runs, fits)``;
    ``fits`` is false if the runs outgrow the slots' 27-bit offsets (the caller raises).
    """
    size = 1 << width
    offsets[:] = 0
    for i in range(n):
        b = 4 * i
        k = np.int64(_field(hflat[b], hflat[b + 1], hflat[b + 2], hflat[b + 3], start, width))
        offsets[k + 1] += 1
    acc = np.uint32(0)
    for k in range(size + 1):  # offsets[k] := rows with a key below k
        acc += offsets[k]
        offsets[k] = acc
    for i in range(n):  # offsets[k] is the start of bucket k: use it as a cursor...
        b = 4 * i
        k = np.int64(_field(hflat[b], hflat[b + 1], hflat[b + 2], hflat[b + 3], start, width))
        postings[offsets[k]] = i
        offsets[k] += 1
    for k in range(size, 0, -1):  # ...which leaves it at the start of k+1: shift back
        offsets[k] = offsets[k - 1]
    offsets[0] = 0
    spilled = 0
    for k in range(size):
        count = np.int64(offsets[k + 1] - offsets[k])
        if count >= 2:
            spilled += count + (1 if count > _MAX_CODED_COUNT else 0)
    runs = np.zeros(spilled + _RUN_PAD, np.uint32)
    if spilled > _OFFSET_MASK:
        return runs[:0], False
    o = 0
    for k in range(size):
        lo = offsets[k]
        count = np.int64(offsets[k + 1] - lo)
        if count == 0:
            slots[k] = _EMPTY
        elif count == 1:
            slots[k] = postings[lo]
        else:
            if count <= _MAX_CODED_COUNT:
                slots[k] = np.uint32(_MULTI | ((count - 1) << _COUNT_SHIFT) | o)
            else:
                slots[k] = np.uint32(_MULTI | o)
                runs[o] = count
                o += 1
            for p in range(count):
                runs[o + p] = postings[lo + p]
            o += count
    return runs, True


@njit(nogil=True, cache=True)
def gather_rows(a, a_rows, b, b_rows, order, out):  # type: ignore[no-untyped-def]
    """``out[i] = (a[a_rows] ++ b[b_rows])[order[i]]`` without materialising the
    concatenation: compaction merges the live static rows and the delta this way."""
    na = a_rows.shape[0]
    for i in range(order.shape[0]):
        j = order[i]
        src = a if j < na else b
        row = a_rows[j] if j < na else b_rows[j - na]
        for w in range(4):
            out[i, w] = src[row, w]


@njit(inline="always", cache=True)
def _sort_group(out_id, out_d, lo, hi):  # type: ignore[no-untyped-def]
    """Order one query's matches by (distance, id) in place."""
    k = hi - lo
    if k < 2:
        return
    if k <= 32:  # the usual case: insertion sort
        for i in range(lo + 1, hi):
            d = out_d[i]
            e = out_id[i]
            j = i - 1
            while j >= lo and (out_d[j] > d or (out_d[j] == d and out_id[j] > e)):
                out_d[j + 1] = out_d[j]
                out_id[j + 1] = out_id[j]
                j -= 1
            out_d[j + 1] = d
            out_id[j + 1] = e
        return
    ids = out_id[lo:hi].copy()
    ds = out_d[lo:hi].copy()
    by_id = np.argsort(ids, kind="mergesort")
    order = by_id[np.argsort(ds[by_id], kind="mergesort")]
    for i in range(k):
        out_id[lo + i] = ids[order[i]]
        out_d[lo + i] = ds[order[i]]


@njit(nogil=True, cache=True)
def _probe(q0, q1, q2, q3, plan, slots, masks, slot_idx, slot_val, cand, run_at, run_code, bound):  # type: ignore[no-untyped-def]
    """Phases (1) and (2) for one query: fills ``cand`` with one-row buckets and
    ``run_at``/``run_code`` with bigger ones; returns (candidates, runs).

    ``bound[c]`` ends up at the end of chunk c's candidates and ``bound[m + c]`` at the
    end of its runs (chunks in order), so a candidate's chunk is found by position.
    """
    m = plan.shape[1]
    total = slot_idx.shape[0]
    t = 0
    for c in range(m):  # (1) slot index of every probe
        key = _field(q0, q1, q2, q3, plan[0, c], plan[1, c])
        sb = plan[4, c]
        mb = plan[6, c]
        for j in range(plan[3, c]):
            slot_idx[t] = sb + np.int64(key ^ np.uint64(masks[mb + j]))
            t += 1
    # (2) load the slots (nothing else in this loop: a store whose address depended on
    # the previous slot's value would chain every load to the one before)...
    for j in range(min(_AHEAD_SLOTS, total)):
        _prefetch(slots, slot_idx[j])
    for j in range(total):
        if j + _AHEAD_SLOTS < total:
            _prefetch(slots, slot_idx[j + _AHEAD_SLOTS])
        slot_val[j] = slots[slot_idx[j]]
    # ...then file each one, branch-free, as a candidate row or an overflow run
    nc = 0
    nr = 0
    t = 0
    for c in range(m):
        rb = plan[5, c]
        for _ in range(plan[3, c]):
            v = slot_val[t]
            t += 1
            cand[nc] = v
            nc += np.int64(v < _MULTI)
            run_at[nr] = rb + np.int64(v & _OFFSET_MASK)
            run_code[nr] = np.int64(v >> _COUNT_SHIFT) & 15
            nr += np.int64((v >= _MULTI) & (v != _EMPTY))
        bound[c] = nc
        bound[m + c] = nr
    return nc, nr


@njit(nogil=True, cache=True)
def _expand_runs(runs, run_at, run_code, nr, cand, nc, bound, m):  # type: ignore[no-untyped-def]
    """Phase (3): append every run's rows to ``cand``; returns the new candidate count,
    or minus the room needed if ``cand`` is too small (nothing is lost: call again
    with a bigger one). Rewrites ``bound[m:]`` from run counts to cand positions."""
    need = nc
    for j in range(nr):
        code = run_code[j]
        need += code + 1 if code else np.int64(runs[run_at[j]])
    if need + _RUN_PAD > cand.shape[0]:
        return -(need + _RUN_PAD)
    # A run's 8-row copy may reach into the next cache line: prefetch both ends.
    for j in range(min(_AHEAD_RUNS, nr)):
        _prefetch(runs, run_at[j])
        _prefetch(runs, run_at[j] + 7)
    c = 0
    for j in range(nr):
        while bound[m + c] <= j:
            bound[m + c] = nc
            c += 1
        if j + _AHEAD_RUNS < nr:
            _prefetch(runs, run_at[j + _AHEAD_RUNS])
            _prefetch(runs, run_at[j + _AHEAD_RUNS] + 7)
        o = run_at[j]
        code = run_code[j]
        if code == 0:  # a bucket of more than _MAX_CODED_COUNT rows: size in front
            count = np.int64(runs[o])
            o += 1
        else:
            count = code + 1
        for p in range(0, count, 8):
            _copy8(runs, o + p, cand, nc + p)
        nc += count
    while c < m:
        bound[m + c] = nc
        c += 1
    return nc


@njit(nogil=True, cache=True)
def _verify(queries, qi, radius, plan, hflat, dead, ids, cand, nc, bound, out_q, out_id, out_d, nout):  # type: ignore[no-untyped-def]
    """Phase (4): check every candidate on 256 bits and append the matches; returns the
    new output count, which may exceed the outputs' size (then call again, from the
    same ``nout``, with bigger ones). An entry reachable from several chunks is
    reported only from the first chunk whose flip budget it meets."""
    m = plan.shape[1]
    cap = out_q.shape[0]
    q0, q1, q2, q3 = queries[4 * qi], queries[4 * qi + 1], queries[4 * qi + 2], queries[4 * qi + 3]
    for j in range(min(_AHEAD_ROWS, nc)):
        _prefetch(hflat, 4 * np.int64(cand[j]))
    for j in range(nc):
        if j + _AHEAD_ROWS < nc:
            _prefetch(hflat, 4 * np.int64(cand[j + _AHEAD_ROWS]))
        row = np.int64(cand[j])
        d = _distance(hflat, 4 * row, q0, q1, q2, q3)
        if d > radius or dead[row]:
            continue
        found = 0
        if j < bound[m - 1]:
            while bound[found] <= j:
                found += 1
        else:
            while bound[m + found] <= j:
                found += 1
        b = 4 * row
        x0 = hflat[b] ^ q0
        x1 = hflat[b + 1] ^ q1
        x2 = hflat[b + 2] ^ q2
        x3 = hflat[b + 3] ^ q3
        earlier = False
        for e in range(found):
            if plan[3, e] > 0 and _popcount(_field(x0, x1, x2, x3, plan[0, e], plan[1, e])) <= plan[2, e]:
                earlier = True
                break
        if earlier:
            continue
        if nout < cap:
            out_q[nout] = qi
            out_id[nout] = ids[row]
            out_d[nout] = d
        nout += 1
    return nout


@njit(nogil=True, cache=True)
def _scan(queries, qi, radius, dflat, ddead, dids, dn, out_q, out_id, out_d, nout):  # type: ignore[no-untyped-def]
    """Brute force over the delta rows; same output contract as ``_verify``."""
    cap = out_q.shape[0]
    q0, q1, q2, q3 = queries[4 * qi], queries[4 * qi + 1], queries[4 * qi + 2], queries[4 * qi + 3]
    for row in range(dn):
        d = _distance(dflat, 4 * row, q0, q1, q2, q3)
        if d <= radius and not ddead[row]:
            if nout < cap:
                out_q[nout] = qi
                out_id[nout] = dids[row]
                out_d[nout] = d
            nout += 1
    return nout


@njit(nogil=True, cache=True)
def lookup(  # type: ignore[no-untyped-def]
    queries,  # uint64[q*4]
    nq,
    radius,
    hflat,  # uint64[n*4], static rows (64-byte aligned)
    dead,  # uint8[n], static tombstones
    ids,  # int64[n], static entry ids
    plan,  # int64[7, m]: start, width, flips, probes, slot base, run base, mask base
    slots,  # uint32[...], every chunk's slot table
    runs,  # uint32[...], every chunk's overflow runs (+ padding)
    masks,  # uint32[...], flip masks per chunk width, fewest flipped bits first
    dflat,  # uint64[cap*4], delta rows
    ddead,  # uint8[cap]
    dids,  # int64[cap]
    dn,  # delta rows in use
):
    """Every live entry within ``radius`` of each query: arrays (query, id, distance)
    ordered by query, distance, id.

    Per query: (1) compute every probe's slot index; (2) load the slots (prefetched
    ``_AHEAD_SLOTS`` ahead), then file each one branch-free as a candidate row or an
    overflow run; (3) copy the runs' rows into the candidates; (4) verify every
    candidate on 256 bits (rows prefetched ``_AHEAD_ROWS`` ahead); then scan the delta.
    Branching on a just-loaded value would stall on its cache miss and serialise the
    misses; the phases keep them independent (measured at N=10M: 230 us per lookup for
    the nested loop, 33 us with the phases, L2 prefetches, vector row loads and
    aligned rows).

    The phases are separate functions so that no hot loop reassigns an array (growing
    a buffer inside a numba loop makes it update reference counts on every iteration,
    measured 100x slower on the delta scan); buffers grow here, between calls.
    """
    m = plan.shape[1]
    total = 0
    for c in range(m):
        total += plan[3, c]
    slot_idx = np.empty(total, np.int64)
    slot_val = np.empty(total, np.uint32)
    run_at = np.empty(total, np.int64)
    run_code = np.empty(total, np.int64)
    cand = np.empty(total + 4096, np.uint32)
    bound = np.empty(2 * m, np.int64)
    cap = 16 + 4 * nq
    out_q = np.empty(cap, np.int64)
    out_id = np.empty(cap, np.int64)
    out_d = np.empty(cap, np.int64)
    nout = 0
    for qi in range(nq):
        q0 = queries[4 * qi]
        q1 = queries[4 * qi + 1]
        q2 = queries[4 * qi + 2]
        q3 = queries[4 * qi + 3]
        first = nout
        nc, nr = _probe(q0, q1, q2, q3, plan, slots, masks, slot_idx, slot_val, cand, run_at, run_code, bound)
        if nr:
            got = _expand_runs(runs, run_at, run_code, nr, cand, nc, bound, m)
            if got < 0:
                cand = _grow(cand, nc, -got)
                got = _expand_runs(runs, run_at, run_code, nr, cand, nc, bound, m)
            nc = got
        else:
            for c in range(m):
                bound[m + c] = nc
        while True:  # grow the outputs and retry if a query matched more than they hold
            end = _verify(
                queries, qi, radius, plan, hflat, dead, ids, cand, nc, bound, out_q, out_id, out_d, nout
            )
            if dn and end <= cap:
                end = _scan(queries, qi, radius, dflat, ddead, dids, dn, out_q, out_id, out_d, end)
            if end <= cap:
                break
            cap = max(2 * cap, end + 16)
            out_q = _grow(out_q, nout, cap)
            out_id = _grow(out_id, nout, cap)
            out_d = _grow(out_d, nout, cap)
        nout = end
        _sort_group(out_id, out_d, first, nout)
    return out_q[:nout], out_id[:nout], out_d[:nout]


@njit(cache=True)
def lookup_holding_gil(  # type: ignore[no-untyped-def]
    queries, nq, radius, hflat, dead, ids, plan, slots, runs, masks, dflat, ddead, dids, dn
):
    """:func:`lookup` without giving up the GIL (only the entry from Python releases it,
    and this entry does not): for a few queries, whose lookup costs less than getting
    the GIL back from whichever thread took it meanwhile."""
    return lookup(queries, nq, radius, hflat, dead, ids, plan, slots, runs, masks, dflat, ddead, dids, dn)
