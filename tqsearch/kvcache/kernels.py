"""CUDA C++ sources of the KV-cache kernels (compiled at run time by CuPy/NVRTC).

Two kernels, each specialised at compile time by ``#define`` lines:

``tq_encode``
    One warp per new token row: key offset (keys only), norm, random signs,
    Walsh-Hadamard butterflies (in-lane strides, then lane shuffles),
    Lloyd-Max coding against the
    codebook boundaries, bit-packing in the layout of
    :mod:`tqsearch.kvcache.codec`. ``blockIdx.y`` selects keys (0) or values (1).

``tq_attend``
    Split-sequence decode attention on the codes (flash-decoding), splits
    merged in the same launch. Blocks are persistent: each takes work items
    ``(batch, kv head, split)`` in turn, and the block's warps take the
    split's tiles in turn. For an item, each warp starts ``cp.async`` copies
    of its first tiles (``TT`` tokens of key codes, value codes and both
    scales; a ring of ``NS`` stages per warp in shared memory) while the
    block rotates and pre-scales the ``G`` query heads of the KV head once,
    then walks its tiles while the next one is in flight:

    * scores ``S = Khat Q^T`` on tensor cores (``mma.m16n8k16``, fp16 in,
      fp32 accumulate): ``A`` = key centroids (16 tokens x 16 dims), which
      each lane builds from one contiguous chunk of code bytes through a
      replicated, bank-conflict-free shared-memory table mapping a pair of
      codes to a pair of fp16 centroids (one byte permute forms the address
      for 4-bit codes); ``B`` = the rotated queries (8 heads per tile);
    * scores times the per-token key scale, online softmax in base 2 (the
      accumulator rescale is skipped while no running max moves);
    * ``O^T += Vhat^T P^T`` on tensor cores: ``A`` = value centroids, pairs
      of tokens at one dimension (for 4-bit values the nibbles of two tokens
      are combined into one table index, otherwise two lookups are combined
      with byte permutes), ``B`` = probabilities times the per-token value
      scale, moved from the score accumulators with one ``movmatrix``
      transpose per 8 x 8 block.

    Value rows are placed in the stage with a swizzle so that the 16 lanes of
    a shared-memory wavefront read 32 different banks. The warps' results are
    combined in shared memory (log-sum-exp weights) into one partial result
    per item. With one split the block writes the output itself; otherwise
    the block that finishes the last item of a (batch, kv head) (an atomic
    counter) merges the partials. The output is un-rotated with one
    Walsh-Hadamard transform per head and written in the query's dtype.

    Built with ``PDL`` (compute capability 9.0+), the kernel is launched as a
    programmatic dependent of the previous kernel in the stream: its blocks
    fill the lookup tables while that kernel's last blocks finish, wait for it
    (``griddepcontrol.wait``) before any other global access, then release the
    next launch, so launch latency overlaps the previous call's tail.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "dtype_code", "encode_source", "attend_source", "attend_smem", "chunk_align",
]

_DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}


def dtype_code(dtype) -> int:
    """0 for float32, 1 for float16, 2 for bfloat16; TypeError otherwise."""
    name = np.dtype(dtype).name if not hasattr(dtype, "name") else dtype.name
    if name not in _DTYPES:
        raise TypeError(
            f"dtype {name} is not supported: pass float16, bfloat16 or float32 CuPy arrays"
        )
    return _DTYPES[name]


def chunk_align(nbytes: int) -> int:
    """Largest power of two (<= 16) dividing ``nbytes``: the widest safe load."""
    a = 16
    while nbytes % a:
        a //= 2
    return a


_COMMON = r"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
#define FULL 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)
#define E (D / 32)

template <int T> __device__ __forceinline__ float ldf(const void* p, long long i);
template <> __device__ __forceinline__ float ldf<0>(const void* p, long long i) {
    return ((const float*)p)[i];
}
template <> __device__ __forceinline__ float ldf<1>(const void* p, long long i) {
    u16 h = ((const u16*)p)[i];
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
template <> __device__ __forceinline__ float ldf<2>(const void* p, long long i) {
    u16 h = ((const u16*)p)[i];
    return __uint_as_float(((u32)h) << 16);
}

template <int T> __device__ __forceinline__ void stf(void* p, long long i, float v);
template <> __device__ __forceinline__ void stf<0>(void* p, long long i, float v) {
    ((float*)p)[i] = v;
}
template <> __device__ __forceinline__ void stf<1>(void* p, long long i, float v) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    ((u16*)p)[i] = h;
}
template <> __device__ __forceinline__ void stf<2>(void* p, long long i, float v) {
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    ((u16*)p)[i] = h;
}

__device__ __forceinline__ u16 f2h(float v) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(FULL, v, m);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, m));
    return v;
}

// Unnormalised Walsh-Hadamard transform of the D values held E per lane
// (lane l holds coordinates l*E .. l*E+E-1); strides 1, 2, 4, ... as in NumPy.
__device__ __forceinline__ void warp_fwht(float* x, int lane) {
#pragma unroll
    for (int h = 1; h < E; h <<= 1) {
#pragma unroll
        for (int e = 0; e < E; ++e) {
            if ((e & h) == 0) {
                float a = x[e], b = x[e + h];
                x[e] = a + b;
                x[e + h] = a - b;
            }
        }
    }
#pragma unroll
    for (int m = 1; m < 32; m <<= 1) {
        bool upper = (lane & m) != 0;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            float o = __shfl_xor_sync(FULL, x[e], m);
            x[e] = upper ? (o - x[e]) : (x[e] + o);
        }
    }
}
"""

_ENCODE = r"""
// coordinate held at stream position i (see codec.key_stream_order / value_stream_order)
__device__ __forceinline__ int key_dim(int i) {
    int c = i / (D / 4), r = i % (D / 4);
    int k = r >> 2, q = r & 3;
    return 16 * k + 2 * c + (q & 1) + 8 * (q >> 1);
}
__device__ __forceinline__ int value_dim(int i) {
    int g = i / (D / 8), r = i % (D / 8);
    return 16 * (r >> 1) + g + 8 * (r & 1);
}

template <int BITS, int ISV>
__device__ __forceinline__ void encode_row(
    const void* __restrict__ src, long long row, const float* __restrict__ signs,
    const float* __restrict__ bnd, const float* __restrict__ cent,
    u8* __restrict__ dst, float* __restrict__ scale_dst, u8* sc, int lane, int nc,
    const float* __restrict__ off)
{
    float x[E];
    float ss = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
        x[e] = ldf<XT>(src, row * D + lane * E + e);
        if (!ISV) x[e] -= off[lane * E + e];
        ss = fmaf(x[e], x[e], ss);
    }
    ss = warp_sum(ss);
    float nrm = sqrtf(ss);
#pragma unroll
    for (int e = 0; e < E; ++e) x[e] *= signs[lane * E + e];
    warp_fwht(x, lane);
    float safe = nrm > 0.f ? nrm : 1.f;
    float cs = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
        float u = __fdiv_rn(__fmul_rn(x[e], RSQ), safe);
        int c = 0;
#pragma unroll
        for (int i = 0; i < (1 << BITS) - 1; ++i) c += (u >= bnd[i]) ? 1 : 0;
        sc[lane * E + e] = (u8)c;
        float cv = cent[c];
        cs = fmaf(cv, cv, cs);
    }
    cs = warp_sum(cs);
    float scale = nrm;
    if (nc) scale = cs > 0.f ? __fdiv_rn(nrm, sqrtf(cs)) : 0.f;
    __syncwarp();
    const int ROW = D * BITS / 8;
    for (int k = lane; k < ROW; k += 32) {
        u32 byte = 0;
#pragma unroll
        for (int bit = 0; bit < 8; ++bit) {
            int s = 8 * k + bit;
            int i = s / BITS, p = s - i * BITS;
            int dim = ISV ? value_dim(i) : key_dim(i);
            byte |= (u32)((sc[dim] >> p) & 1) << bit;
        }
        dst[k] = (u8)byte;
    }
    if (lane == 0) *scale_dst = scale;
    __syncwarp();
}

// grid: (ceil(B*H*Tn / 8), 2); block: 256 threads (8 warps, one row each)
extern "C" __global__ void __launch_bounds__(256) tq_encode(
    const void* __restrict__ kx, const void* __restrict__ vx,
    const int* __restrict__ start, const int* __restrict__ n_valid,
    int B, int H, int Tn, int cap,
    u8* __restrict__ kcodes, float* __restrict__ kscale,
    u8* __restrict__ vcodes, float* __restrict__ vscale,
    const float* __restrict__ ksigns, const float* __restrict__ vsigns,
    const float* __restrict__ kbnd, const float* __restrict__ vbnd,
    const float* __restrict__ kcent, const float* __restrict__ vcent,
    const float* __restrict__ koff, int nc)
{
    __shared__ u8 sc_all[8][D];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    long long row = (long long)blockIdx.x * 8 + warp;
    if (row >= (long long)B * H * Tn) return;
    int t = (int)(row % Tn);
    long long bh = row / Tn;
    int b = (int)(bh / H);
    if (t >= n_valid[b]) return;
    long long pos = bh * cap + start[b] + t;
    if (blockIdx.y == 0) {
        encode_row<KB, 0>(kx, row, ksigns, kbnd, kcent, kcodes + pos * (D * KB / 8),
                          kscale + pos, sc_all[warp], lane, nc, koff + bh * D);
    } else {
        encode_row<VB, 1>(vx, row, vsigns, vbnd, vcent, vcodes + pos * (D * VB / 8),
                          vscale + pos, sc_all[warp], lane, nc, koff);
    }
}
"""

_ATTEND = r"""
#define NKT (D / 16)
#define KCH (D * KB / 32)
#define VCH (D * VB / 64)
#define KROW (D * KB / 8)
#define VROW (D * VB / 8)
#define KW ((KCH + 3) / 4 + 1)
#define VW ((VCH + 3) / 4 + 1)
#define NH ((G + 7) / 8)
#define NMT (TT / 16)
#define KENT (1 << (2 * KB))
#define VENT (1 << (2 * VB))
// lookup tables: entry e of a table, copy for lane l, at byte e * LSTRIDE + l * 4 (+ 128 for
// the value table when it differs), so every lane reads its own bank
#define LUT256 (KB == 4 && VB == 4 && WIDE)
#define LSTRIDE (LUT256 ? 256 : ((KB == VB) ? 128 : 256))
#define LENT ((KENT > VENT) ? KENT : VENT)
#define LUT_BYTES (LENT * LSTRIDE)
#define VTAB_OFF ((KB == VB) ? 0 : 128)
#define STAGE (TT * (KROW + VROW + 8))
#define KREG 0
#define VREG (TT * KROW)
#define NREG (TT * (KROW + VROW))
#define VSWZ (VROW == 64)

__device__ __forceinline__ u32 lds32(u32 a) {
    u32 v;
    asm volatile("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(a));
    return v;
}
__device__ __forceinline__ float ldsf(u32 a) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(a));
    return v;
}
__device__ __forceinline__ void sts16(u32 a, u16 v) {
    asm volatile("st.shared.u16 [%0], %1;" :: "r"(a), "h"(v));
}

// NB bytes at shared address a (aligned to AL) into little-endian words w
template <int NB, int AL>
__device__ __forceinline__ void lds_chunk(u32 a, u32* w) {
#pragma unroll
    for (int i = 0; i < (NB + 3) / 4 + 1; ++i) w[i] = 0u;
    if (AL == 16) {
#pragma unroll
        for (int i = 0; i < NB / 16; ++i)
            asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];"
                         : "=r"(w[4 * i]), "=r"(w[4 * i + 1]), "=r"(w[4 * i + 2]),
                           "=r"(w[4 * i + 3]) : "r"(a + 16 * i));
    } else if (AL == 8) {
#pragma unroll
        for (int i = 0; i < NB / 8; ++i)
            asm volatile("ld.shared.v2.b32 {%0,%1}, [%2];"
                         : "=r"(w[2 * i]), "=r"(w[2 * i + 1]) : "r"(a + 8 * i));
    } else if (AL == 4) {
#pragma unroll
        for (int i = 0; i < NB / 4; ++i) w[i] = lds32(a + 4 * i);
    } else if (AL == 2) {
#pragma unroll
        for (int i = 0; i < NB / 2; ++i) {
            u16 h;
            asm volatile("ld.shared.u16 %0, [%1];" : "=h"(h) : "r"(a + 2 * i));
            w[i >> 1] |= ((u32)h) << (16 * (i & 1));
        }
    } else {
#pragma unroll
        for (int i = 0; i < NB; ++i) {
            u32 bt;
            asm volatile("ld.shared.u8 %0, [%1];" : "=r"(bt) : "r"(a + i));
            w[i >> 2] |= bt << (8 * (i & 3));
        }
    }
}

__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

// byte offset in the lookup table of field f (FW bits) of the bit stream in words w,
// for this lane (lane4 = 4 * lane)
template <int FW>
__device__ __forceinline__ u32 lut_off(const u32* w, int f, u32 lane4) {
    const int bit = f * FW;
    const int wi = bit >> 5, sh = bit & 31;
    if (LSTRIDE == 256 && FW == 8) {
        // byte sh/8 of w[wi] -> bits 8..15, lane4 -> bits 0..7, zeros above
        return prmt(w[wi], lane4, 0x5504u | ((u32)(sh >> 3) << 4));
    }
    const int LS = (LSTRIDE == 256) ? 8 : 7;
    u32 x;
    if (sh + FW > 32) {
        x = __funnelshift_r(w[wi], w[wi + 1], sh) << LS;
    } else if (sh >= LS) {
        x = w[wi] >> (sh - LS);
    } else {
        x = w[wi] << (LS - sh);
    }
    return (x & (((1u << FW) - 1u) << LS)) | lane4;
}

__device__ __forceinline__ u32 pack_h2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ u32 transpose8x8(u32 a) {
    u32 r;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(a));
    return r;
}

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}

// value row r, 8-byte unit u, within a stage: rows of 64 bytes are placed so that the
// 16 lanes of one shared-memory wavefront hit 32 different banks
__device__ __forceinline__ u32 vpos(int r, int u) {
    if (VSWZ) return (u32)((r ^ ((r >> 1) & 1)) * 64 + ((u ^ (((r >> 2) & 1) * 4)) * 8));
    return (u32)(r * VROW + u * VCH);
}

template <bool B> struct Flag { static constexpr bool value = B; };

// this lane's copy sources of one tile (TT tokens: key codes, value codes, and a 16-byte chunk
// of key or value scales), advanced by STEP tokens per tile of the warp
struct TileSrc {
    const u8* k;
    const u8* v;
    const float* n;
    __device__ __forceinline__ void advance(int tokens) {
        k += (long long)tokens * KROW;
        v += (long long)tokens * VROW;
        n += tokens;
    }
};

// copy one tile into the stage at st; vdst is this lane's first value chunk in a stage (the
// swizzle depends on the lane only, so chunk j lies 512 * j bytes further)
__device__ __forceinline__ void issue_tile(u32 st, const TileSrc& src, u32 vdst, int lane) {
    const int NKC = TT * KROW / 16, NVC = TT * VROW / 16;
#pragma unroll
    for (int j = 0; j < (NKC + 31) / 32; ++j)
        if (NKC % 32 == 0 || lane + 32 * j < NKC)
            cp_async16(st + KREG + 16 * lane + 512 * j, src.k + 512 * j);
#pragma unroll
    for (int j = 0; j < (NVC + 31) / 32; ++j)
        if (NVC % 32 == 0 || lane + 32 * j < NVC)
            cp_async16(st + VREG + vdst + 512 * j, src.v + 512 * j);
    if (lane < TT / 2) cp_async16(st + NREG + 16 * lane, src.n);
}

// entry e (value v) of a pair table: 32 copies (one per lane) at byte e * LSTRIDE; each
// thread starts its row at another 16-byte column so neighbours hit other banks
__device__ __forceinline__ void fill_entry(u8* tab, int e, u32 v) {
    const uint4 v4 = make_uint4(v, v, v, v);
#pragma unroll
    for (int c = 0; c < 8; ++c) *(uint4*)(tab + e * LSTRIDE + 16 * ((c + e) & 7)) = v4;
}

// N consecutive floats (N * 4 bytes aligned) from L2, in vector loads
template <int N>
__device__ __forceinline__ void ld_part(const float* p, float* x) {
    if (N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N / 4; ++i) {
            const float4 v = __ldcg((const float4*)p + i);
            x[4 * i] = v.x; x[4 * i + 1] = v.y; x[4 * i + 2] = v.z; x[4 * i + 3] = v.w;
        }
    } else if (N % 2 == 0) {
#pragma unroll
        for (int i = 0; i < N / 2; ++i) {
            const float2 v = __ldcg((const float2*)p + i);
            x[2 * i] = v.x; x[2 * i + 1] = v.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) x[i] = __ldcg(p + i);
    }
}

// output of one query head from its rotated-domain sum x (E values per lane) and softmax sum l
__device__ __forceinline__ void write_head(float* x, float l, long long qh, int lane,
                                           const float* __restrict__ vsigns, void* out) {
    warp_fwht(x, lane);
    const float inv = l > 0.f ? RSQ / l : 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e)
        stf<QT>(out, qh * D + lane * E + e, x[e] * inv * vsigns[lane * E + e]);
}

// load value-code chunks of the four token rows of a 16-token block (rows 2tig, 2tig+1,
// 2tig+8, 2tig+9) and form, for 4-bit values, the lookup fields of token pairs: byte k of
// lo[p] (hi[p]) holds the low (high) nibbles of byte k of rows 2p and 2p+1, so one lookup
// in the pair table yields an A register of O^T += Vhat^T P^T directly
#define VWD (VCH / 4)
#define QPW ((8 * NH + NW - 1) / NW)             // query heads rotated per warp
#define NSUM ((8 * D + NW * 32 - 1) / (NW * 32))  // partial sums per thread in the block merge
#define SLD (D + 4)   // row stride of a warp's slot: its stores hit 32 banks
#define MB (E >= 8 ? 8 : 16)   // splits whose partials the final merge loads together
#define FTE ((LENT + NW * 32 - 1) / (NW * 32))   // table entries filled per thread

// grid: persistent, any size; block: NW warps. Dynamic shared memory: LUT_BYTES of tables,
// per warp NS stages of STAGE bytes, the block's rotated queries (8 * NH * D halves), per
// warp and head a running max and sum, one flag.
//
// A work item is (batch, kv head, split of C tokens). The block's warps take the split's
// tiles in turn (warp w: tiles w, w + NW, ...), then combine their results in shared memory
// into one partial result per item. The block that completes the last item of a
// (batch, kv head) (an atomic counter per pair) merges its S partials, undoes the value
// rotation and writes the output; it resets the counter for the next call.
extern "C" __global__ void __launch_bounds__(NW * 32) tq_attend(
    const void* __restrict__ q,
    const u8* __restrict__ kcodes, const float* __restrict__ kscale,
    const u8* __restrict__ vcodes, const float* __restrict__ vscale,
    const int* __restrict__ lengths,
    int B, int H, int cap, int S, int C, float qscale,
    const float* __restrict__ ksigns, const float* __restrict__ vsigns,
    const u32* __restrict__ klut, const u32* __restrict__ vlut,
    float* __restrict__ part_acc, float* __restrict__ part_ml,
    int* __restrict__ counters, void* __restrict__ out)
{
    extern __shared__ __align__(16) u8 smem[];
    const u32 sbase = (u32)__cvta_generic_to_shared(smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tig = lane & 3;
    const u32 lane4 = 4u * lane;
    const u32 ktab = sbase, vtab = sbase + VTAB_OFF;
    const u32 ring = sbase + LUT_BYTES + warp * (NS * STAGE);
    u16* qs = (u16*)(smem + LUT_BYTES + NW * NS * STAGE);
    float* mw = (float*)(qs + 8 * NH * D);     // [NW][8 * NH] running max per warp and head
    float* lw = mw + NW * 8 * NH;              // [NW][8 * NH] sums
    float* bm = lw + NW * 8 * NH;              // [8 * NH] the block's max per head
    float* bl = bm + 8 * NH;                   // [8 * NH] and its sum
    int* flag = (int*)(bl + 8 * NH);
    // a warp's ring doubles as its slot for the block reduction (its copies have landed)
    float* slot = (float*)(smem + LUT_BYTES + warp * (NS * STAGE));
    // per-lane offsets inside a stage (independent of the tile)
    const u32 koff = g * KROW + tig * KCH;
    u32 voff[NMT][4];
#pragma unroll
    for (int w = 0; w < NMT; ++w)
#pragma unroll
        for (int j = 0; j < 4; ++j)
            voff[w][j] = VREG + vpos(16 * w + 2 * tig + (j & 1) + 8 * (j >> 1), g);
    const u32 vdst = VSWZ ? vpos(lane >> 2, 2 * (lane & 3)) : 16u * lane;
    const int n_items = B * H * S;
    const int STEP = NW * TT;
    bool tables = false;
#if PDL
    // launched as a programmatic dependent of the previous kernel in the stream: fill the
    // tables (written when the cache was made) while that kernel finishes, then wait for it
    // (its results, the counters it reset) before any other global access, and let the next
    // launch begin (its blocks take the multiprocessors as this grid's blocks leave)
    {
        u32 kl[FTE], vl[FTE];
#pragma unroll
        for (int i = 0; i < FTE; ++i) {
            const int e = threadIdx.x + i * NW * 32;
            kl[i] = e < KENT ? klut[e] : 0u;
            vl[i] = (KB != VB && e < VENT) ? vlut[e] : 0u;
        }
#pragma unroll
        for (int i = 0; i < FTE; ++i) {
            const int e = threadIdx.x + i * NW * 32;
            if (e < KENT) fill_entry(smem, e, kl[i]);
            if (KB != VB && e < VENT) fill_entry(smem + VTAB_OFF, e, vl[i]);
        }
        tables = true;
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif

    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
        const int s = item % S;
        const int bh = item / S;
        const int b = bh / H;
        const int t_begin = s * C;
        const int t_first = t_begin + warp * TT;
        const u8* kb = kcodes + (long long)bh * cap * KROW;
        const u8* vb = vcodes + (long long)bh * cap * VROW;
        const float* ksb = kscale + (long long)bh * cap;
        const float* vsb = vscale + (long long)bh * cap;
        // the small loads the prologue needs (queries, signs, table entries, length) go out
        // first, ahead of the tile copies that flood the memory system; then this warp's
        // first tiles; then the queries are rotated and the tables filled while they arrive
        float qx[QPW][E], sg[E];
#pragma unroll
        for (int e = 0; e < E; ++e) sg[e] = ksigns[lane * E + e];
#pragma unroll
        for (int u = 0; u < QPW; ++u) {
            const int j = warp + u * NW;
#pragma unroll
            for (int e = 0; e < E; ++e) qx[u][e] = 0.f;
            if (j < G) {
                const long long base = ((long long)bh * G + j) * D + lane * E;
#pragma unroll
                for (int e = 0; e < E; ++e) qx[u][e] = ldf<QT>(q, base + e);
            }
        }
        u32 kl[FTE], vl[FTE];
#pragma unroll
        for (int i = 0; i < FTE; ++i) {
            const int e = threadIdx.x + i * NW * 32;
            kl[i] = (!tables && e < KENT) ? klut[e] : 0u;
            vl[i] = (!tables && KB != VB && e < VENT) ? vlut[e] : 0u;
        }
        const int len = lengths[b];
        TileSrc src;
        src.k = kb + (long long)t_first * KROW + 16 * lane;
        src.v = vb + (long long)t_first * VROW + 16 * lane;
        src.n = (lane < TT / 4 ? ksb + 4 * lane : vsb + 4 * (lane - TT / 4)) + t_first;
        // (bounded by the capacity, not the length, so the copies need not wait for its load)
#pragma unroll
        for (int p = 0; p < NS - 1; ++p) {
            if (t_first + p * STEP < min(t_begin + C, cap))
                issue_tile(ring + p * STAGE, src, vdst, lane);
            cp_commit();
            src.advance(STEP);
        }
        const int t_end = min(t_begin + C, len);
        // rotate and pre-scale the query heads once per block (warp w: heads w, w + NW, ...);
        // on the first item the tables are filled while the copies are in flight
#pragma unroll
        for (int u = 0; u < QPW; ++u)
#pragma unroll
            for (int e = 0; e < E; ++e) qx[u][e] *= sg[e];
        if (!tables) {
#pragma unroll
            for (int i = 0; i < FTE; ++i) {
                const int e = threadIdx.x + i * NW * 32;
                if (e < KENT) fill_entry(smem, e, kl[i]);
                if (KB != VB && e < VENT) fill_entry(smem + VTAB_OFF, e, vl[i]);
            }
            tables = true;
        }
#pragma unroll
        for (int u = 0; u < QPW; ++u) {
            const int j = warp + u * NW;
            if (j < 8 * NH) {
                warp_fwht(qx[u], lane);
#pragma unroll
                for (int e = 0; e < E; ++e) qs[j * D + lane * E + e] = f2h(qx[u][e] * qscale);
            }
        }
        __syncthreads();
        // B operand of S = Khat Q^T: (dims x heads), this lane: head g, dims 2tig(+1), +8(+9)
        u32 qb[NH][NKT][2];
#pragma unroll
        for (int nh = 0; nh < NH; ++nh)
#pragma unroll
            for (int kt = 0; kt < NKT; ++kt) {
                qb[nh][kt][0] = *(const u32*)(qs + (nh * 8 + g) * D + kt * 16 + 2 * tig);
                qb[nh][kt][1] = *(const u32*)(qs + (nh * 8 + g) * D + kt * 16 + 2 * tig + 8);
            }

        float acc[NH][NKT][4];
#pragma unroll
        for (int nh = 0; nh < NH; ++nh)
#pragma unroll
            for (int mt = 0; mt < NKT; ++mt)
#pragma unroll
                for (int r = 0; r < 4; ++r) acc[nh][mt][r] = 0.f;
        float m_run[NH][2], l_run[NH][2];
#pragma unroll
        for (int nh = 0; nh < NH; ++nh) {
            m_run[nh][0] = m_run[nh][1] = NEG_INF;
            l_run[nh][0] = l_run[nh][1] = 0.f;
        }

        u32 st = ring, st_next = ring + (NS - 1) * STAGE;   // stage read now, stage filled next
#pragma unroll 1
        for (int t0 = t_first; t0 < t_end; t0 += STEP) {
            if (t0 + (NS - 1) * STEP < t_end) issue_tile(st_next, src, vdst, lane);
            cp_commit();
            src.advance(STEP);
            st_next = (st_next == ring + (NS - 1) * STAGE) ? ring : st_next + STAGE;
            cp_wait<NS - 1>();
            __syncwarp();
            // one tile; FULL: every token valid, no masking (all tiles but a sequence's last)
            auto tile = [&](auto full_tag) {
                constexpr bool full = decltype(full_tag)::value;

                // scores S (tokens x heads) = Khat (tokens x dims) * Q^T (dims x heads)
                float sc[NMT][NH][4];
#pragma unroll
                for (int mk = 0; mk < NMT; ++mk) {
                    u32 kw0[KW], kw1[KW];
                    lds_chunk<KCH, KAL>(st + KREG + koff + (16 * mk) * KROW, kw0);
                    lds_chunk<KCH, KAL>(st + KREG + koff + (16 * mk + 8) * KROW, kw1);
#pragma unroll
                    for (int nh = 0; nh < NH; ++nh)
                        sc[mk][nh][0] = sc[mk][nh][1] = sc[mk][nh][2] = sc[mk][nh][3] = 0.f;
#pragma unroll
                    for (int kt = 0; kt < NKT; ++kt) {
                        const u32 a0 = lds32(ktab + lut_off<2 * KB>(kw0, 2 * kt, lane4));
                        const u32 a1 = lds32(ktab + lut_off<2 * KB>(kw1, 2 * kt, lane4));
                        const u32 a2 = lds32(ktab + lut_off<2 * KB>(kw0, 2 * kt + 1, lane4));
                        const u32 a3 = lds32(ktab + lut_off<2 * KB>(kw1, 2 * kt + 1, lane4));
#pragma unroll
                        for (int nh = 0; nh < NH; ++nh)
                            mma16816(sc[mk][nh], a0, a1, a2, a3, qb[nh][kt][0], qb[nh][kt][1]);
                    }
                }
                // key scales (rows = tokens g, g + 8 of each 16), mask, per-head tile max
                float kn[NMT][2], vn[NMT][2];
#pragma unroll
                for (int mk = 0; mk < NMT; ++mk) {
                    kn[mk][0] = ldsf(st + NREG + 4 * (16 * mk + g));
                    kn[mk][1] = ldsf(st + NREG + 4 * (16 * mk + g + 8));
                    vn[mk][0] = ldsf(st + NREG + TT * 4 + 4 * (16 * mk + g));
                    vn[mk][1] = ldsf(st + NREG + TT * 4 + 4 * (16 * mk + g + 8));
                }
                float tmax[NH][2];
#pragma unroll
                for (int nh = 0; nh < NH; ++nh) tmax[nh][0] = tmax[nh][1] = NEG_INF;
#pragma unroll
                for (int mk = 0; mk < NMT; ++mk) {
                    const bool v0 = full || t0 + 16 * mk + g < t_end;
                    const bool v1 = full || t0 + 16 * mk + g + 8 < t_end;
#pragma unroll
                    for (int nh = 0; nh < NH; ++nh) {
                        float* c = sc[mk][nh];
                        c[0] = v0 ? c[0] * kn[mk][0] : NEG_INF;
                        c[1] = v0 ? c[1] * kn[mk][0] : NEG_INF;
                        c[2] = v1 ? c[2] * kn[mk][1] : NEG_INF;
                        c[3] = v1 ? c[3] * kn[mk][1] : NEG_INF;
                        tmax[nh][0] = fmaxf(tmax[nh][0], fmaxf(c[0], c[2]));
                        tmax[nh][1] = fmaxf(tmax[nh][1], fmaxf(c[1], c[3]));
                    }
                }
                float alpha[NH][2];
                bool rescale = false;
#pragma unroll
                for (int nh = 0; nh < NH; ++nh)
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        float m = tmax[nh][r];
                        m = fmaxf(m, __shfl_xor_sync(FULL, m, 4));
                        m = fmaxf(m, __shfl_xor_sync(FULL, m, 8));
                        m = fmaxf(m, __shfl_xor_sync(FULL, m, 16));
                        const float mn = fmaxf(m_run[nh][r], m);
                        alpha[nh][r] = ex2(m_run[nh][r] - mn);
                        rescale |= mn != m_run[nh][r];
                        m_run[nh][r] = mn;
                        l_run[nh][r] *= alpha[nh][r];
                    }
                // probabilities times value scales, as the B operand (tokens x heads) of O^T
                u32 pb[NMT][NH][2];
#pragma unroll
                for (int mk = 0; mk < NMT; ++mk) {
                    const bool v0 = full || t0 + 16 * mk + g < t_end;
                    const bool v1 = full || t0 + 16 * mk + g + 8 < t_end;
#pragma unroll
                    for (int nh = 0; nh < NH; ++nh) {
                        const float* c = sc[mk][nh];
                        const float p0 = ex2(c[0] - m_run[nh][0]);
                        const float p1 = ex2(c[1] - m_run[nh][1]);
                        const float p2 = ex2(c[2] - m_run[nh][0]);
                        const float p3 = ex2(c[3] - m_run[nh][1]);
                        l_run[nh][0] = l_run[nh][0] + p0 + p2;
                        l_run[nh][1] = l_run[nh][1] + p1 + p3;
                        const float w0 = v0 ? vn[mk][0] : 0.f, w1 = v1 ? vn[mk][1] : 0.f;
                        pb[mk][nh][0] = transpose8x8(pack_h2(p0 * w0, p1 * w0));
                        pb[mk][nh][1] = transpose8x8(pack_h2(p2 * w1, p3 * w1));
                    }
                }
                if (__any_sync(FULL, rescale)) {
#pragma unroll
                    for (int nh = 0; nh < NH; ++nh)
#pragma unroll
                        for (int mt = 0; mt < NKT; ++mt) {
                            acc[nh][mt][0] *= alpha[nh][0]; acc[nh][mt][1] *= alpha[nh][1];
                            acc[nh][mt][2] *= alpha[nh][0]; acc[nh][mt][3] *= alpha[nh][1];
                        }
                }
                // O^T (dims x heads) += Vhat^T (dims x tokens) * P^T (tokens x heads)
#pragma unroll
                for (int w = 0; w < NMT; ++w) {
                    u32 vw[4][VW];
#pragma unroll
                    for (int j = 0; j < 4; ++j) lds_chunk<VCH, VAL>(st + voff[w][j], vw[j]);
#if VB == 4
                    {
                        // token-pair fields: one lookup per A register, no permutes after it
                        u32 lo[2][VWD + 1], hi[2][VWD + 1];
#pragma unroll
                        for (int p = 0; p < 2; ++p)
#pragma unroll
                            for (int i = 0; i < VWD; ++i) {
                                const u32 x = vw[2 * p][i], y = vw[2 * p + 1][i];
                                lo[p][i] = (x & 0x0f0f0f0fu) | ((y << 4) & 0xf0f0f0f0u);
                                hi[p][i] = ((x >> 4) & 0x0f0f0f0fu) | (y & 0xf0f0f0f0u);
                            }
#pragma unroll
                        for (int mt = 0; mt < NKT; ++mt) {
                            const u32 a0 = lds32(vtab + lut_off<8>(lo[0], mt, lane4));
                            const u32 a1 = lds32(vtab + lut_off<8>(hi[0], mt, lane4));
                            const u32 a2 = lds32(vtab + lut_off<8>(lo[1], mt, lane4));
                            const u32 a3 = lds32(vtab + lut_off<8>(hi[1], mt, lane4));
#pragma unroll
                            for (int nh = 0; nh < NH; ++nh)
                                mma16816(acc[nh][mt], a0, a1, a2, a3, pb[w][nh][0], pb[w][nh][1]);
                        }
                    }
#else
                    {
#pragma unroll
                        for (int mt = 0; mt < NKT; ++mt) {
                            const u32 x0 = lds32(vtab + lut_off<2 * VB>(vw[0], mt, lane4));
                            const u32 x1 = lds32(vtab + lut_off<2 * VB>(vw[1], mt, lane4));
                            const u32 x2 = lds32(vtab + lut_off<2 * VB>(vw[2], mt, lane4));
                            const u32 x3 = lds32(vtab + lut_off<2 * VB>(vw[3], mt, lane4));
                            const u32 a0 = prmt(x0, x1, 0x5410u), a1 = prmt(x0, x1, 0x7632u);
                            const u32 a2 = prmt(x2, x3, 0x5410u), a3 = prmt(x2, x3, 0x7632u);
#pragma unroll
                            for (int nh = 0; nh < NH; ++nh)
                                mma16816(acc[nh][mt], a0, a1, a2, a3, pb[w][nh][0], pb[w][nh][1]);
                        }
                    }
#endif
                }
            };
            if (t0 + TT <= t_end) tile(Flag<true>{}); else tile(Flag<false>{});
            __syncwarp();
            st = (st == ring + (NS - 1) * STAGE) ? ring : st + STAGE;
        }
        cp_wait<0>();

        // combine the warps: running max and sum per warp and head, then each warp's
        // output weighted against the block's max, summed in shared memory
#pragma unroll
        for (int nh = 0; nh < NH; ++nh)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                float l = l_run[nh][r];
                l += __shfl_xor_sync(FULL, l, 4);
                l += __shfl_xor_sync(FULL, l, 8);
                l += __shfl_xor_sync(FULL, l, 16);
                if (g == 0) {
                    mw[warp * 8 * NH + nh * 8 + 2 * tig + r] = m_run[nh][r];
                    lw[warp * 8 * NH + nh * 8 + 2 * tig + r] = l;
                }
            }
        __syncthreads();
        if (threadIdx.x < G) {   // the block's max and sum per head
            const int h = threadIdx.x;
            float m = NEG_INF, l = 0.f;
            for (int w = 0; w < NW; ++w) m = fmaxf(m, mw[w * 8 * NH + h]);
            for (int w = 0; w < NW; ++w) {
                const float mv = mw[w * 8 * NH + h];
                l += (mv == NEG_INF) ? 0.f : ex2(mv - m) * lw[w * 8 * NH + h];
            }
            bm[h] = m;
            bl[h] = l;
            if (S > 1) {
                part_ml[((long long)item * G + h) * 2] = m;
                part_ml[((long long)item * G + h) * 2 + 1] = l;
            }
        }
        __syncthreads();
        float* pa = part_acc + (long long)item * G * D;
        const float* slot0 = (const float*)(smem + LUT_BYTES);
#pragma unroll
        for (int nh = 0; nh < NH; ++nh) {
            float f[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float m = bm[nh * 8 + 2 * tig + r];
                f[r] = (m_run[nh][r] == NEG_INF) ? 0.f : ex2(m_run[nh][r] - m);
            }
            if (nh > 0) __syncthreads();   // the previous head group's slots are read
#pragma unroll
            for (int mt = 0; mt < NKT; ++mt) {
                const int d0 = 16 * mt + g, d1 = d0 + 8;
                slot[(2 * tig) * SLD + d0] = acc[nh][mt][0] * f[0];
                slot[(2 * tig + 1) * SLD + d0] = acc[nh][mt][1] * f[1];
                slot[(2 * tig) * SLD + d1] = acc[nh][mt][2] * f[0];
                slot[(2 * tig + 1) * SLD + d1] = acc[nh][mt][3] * f[1];
            }
            __syncthreads();
            float sum[NSUM];
#pragma unroll
            for (int k = 0; k < NSUM; ++k) {
                const int i = threadIdx.x + k * NW * 32;
                sum[k] = 0.f;
                if (i < 8 * D) {
                    const int si = (i / D) * SLD + i % D;
#pragma unroll
                    for (int w = 0; w < NW; ++w)
                        sum[k] += ((const float*)(smem + LUT_BYTES + w * (NS * STAGE)))[si];
                    const int h = nh * 8 + i / D;
                    if (S > 1 && h < G) pa[h * D + (i % D)] = sum[k];
                }
            }
            if (S == 1) {
                // a single split is the whole sequence: write the output from the sums
                __syncthreads();
#pragma unroll
                for (int k = 0; k < NSUM; ++k) {
                    const int i = threadIdx.x + k * NW * 32;
                    if (i < 8 * D) ((float*)slot0)[i] = sum[k];
                }
                __syncthreads();
                for (int j = warp; j < 8 && nh * 8 + j < G; j += NW) {
                    float xo[E];
#pragma unroll
                    for (int e = 0; e < E; ++e) xo[e] = slot0[j * D + lane * E + e];
                    write_head(xo, bl[nh * 8 + j], (long long)bh * G + nh * 8 + j, lane, vsigns,
                               out);
                }
            }
        }
        if (S == 1) {
            __syncthreads();   // slots read: the ring may be refilled
            continue;
        }
        __syncthreads();   // slots read (the ring may be refilled), partials written
        if (threadIdx.x == 0) {   // publish the block's partials, then learn whether it is last
            // release the block's partials (ordered before by the barrier) and acquire the
            // others' in one atomic
            int old;
            asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;"
                         : "=r"(old) : "l"(counters + bh) : "memory");
            *flag = old == S - 1;
        }
        __syncthreads();
        if (*flag) {
            // this block completed the pair: merge its S partials (log-sum-exp weights),
            // one warp per query head, the loads of MB splits issued together
            for (int j = warp; j < G; j += NW) {
                float x[E];
#pragma unroll
                for (int e = 0; e < E; ++e) x[e] = 0.f;
                float l = 0.f, mx = NEG_INF;
#pragma unroll 1
                for (int s0 = 0; s0 < S; s0 += MB) {
                    float m[MB], lv[MB], a[MB][E];
#pragma unroll
                    for (int u = 0; u < MB; ++u) {
                        m[u] = NEG_INF;
                        lv[u] = 0.f;
#pragma unroll
                        for (int e = 0; e < E; ++e) a[u][e] = 0.f;
                        if (s0 + u < S) {   // (loads of absent splits would cost L2 bandwidth)
                            const long long it = ((long long)bh * S + s0 + u) * G + j;
                            const float2 ml = __ldcg((const float2*)(part_ml + 2 * it));
                            m[u] = ml.x;
                            lv[u] = ml.y;
                            ld_part<E>(part_acc + it * D + lane * E, a[u]);
                        }
                    }
                    float mb = mx;
#pragma unroll
                    for (int u = 0; u < MB; ++u) mb = fmaxf(mb, m[u]);
                    if (mb == NEG_INF) continue;
                    const float rs = ex2(mx - mb);  // 0 while mx is -inf
                    l *= rs;
#pragma unroll
                    for (int e = 0; e < E; ++e) x[e] *= rs;
                    mx = mb;
#pragma unroll
                    for (int u = 0; u < MB; ++u) {
                        const float w = (m[u] == NEG_INF) ? 0.f : ex2(m[u] - mx);
                        l += (w > 0.f) ? w * lv[u] : 0.f;
#pragma unroll
                        for (int e = 0; e < E; ++e) x[e] += (w > 0.f) ? w * a[u][e] : 0.f;
                    }
                }
                write_head(x, l, (long long)bh * G + j, lane, vsigns, out);
            }
            if (threadIdx.x == 0) counters[bh] = 0;
        }
    }
}
"""


def _defines(**kw) -> str:
    return "".join(f"#define {k} {v}\n" for k, v in kw.items())


def _rsq(d: int) -> str:
    # the exact float32 value NumPy multiplies by, written as a hex float bit pattern
    bits = int(np.array(np.float32(1.0 / np.sqrt(d))).view(np.uint32))
    return f"__int_as_float({bits:#x})"


def encode_source(d: int, key_bits: int, value_bits: int, xt: int) -> str:
    """Source of ``tq_encode`` for one geometry and input dtype code."""
    head = _defines(D=d, KB=key_bits, VB=value_bits, XT=xt, RSQ=_rsq(d))
    return head + _COMMON + _ENCODE


def attend_smem(d: int, key_bits: int, value_bits: int, group: int, warps: int, tile: int,
                stages: int, wide: bool) -> int:
    """Dynamic shared memory (bytes) of ``tq_attend``.

    Tables, the warps' rings, the block's rotated queries, per warp and head
    a running max and sum, the block's max and sum per head, one flag.
    """
    lstride = 256 if (key_bits == value_bits == 4 and wide) or key_bits != value_bits else 128
    lut = (1 << (2 * max(key_bits, value_bits))) * lstride
    stage = tile * (d * key_bits // 8 + d * value_bits // 8 + 8)
    heads = 8 * ((group + 7) // 8)
    return lut + warps * stages * stage + heads * d * 2 + (2 * warps + 2) * heads * 4 + 16


def attend_source(d: int, key_bits: int, value_bits: int, group: int, qt: int,
                  warps: int, tile: int, stages: int, wide: bool = True,
                  pdl: bool = False) -> str:
    """Source of ``tq_attend`` for one geometry, query group size and dtype.

    ``warps`` per block, ``tile`` tokens per warp iteration (16, 32 or 64),
    ``stages`` tiles in each warp's ``cp.async`` ring (2 or more); ``wide``
    spaces the 4/4-bit lookup table entries 256 bytes apart so one byte
    permute forms a lookup address (64 KiB of tables instead of 32). ``pdl``
    (compute capability 9.0 or newer) builds the kernel for programmatic
    dependent launch: the lookup tables are filled before
    ``griddepcontrol.wait`` (so while the previous kernel of the stream
    finishes), every other global access comes after it, and the next launch
    is released right after it.
    """
    head = _defines(
        D=d, KB=key_bits, VB=value_bits, G=group, QT=qt, NW=warps, TT=tile, NS=stages,
        WIDE=int(bool(wide)), RSQ=_rsq(d), PDL=int(bool(pdl)),
        KAL=chunk_align(d * key_bits // 32), VAL=chunk_align(d * value_bits // 64),
    )
    return head + _COMMON + _ATTEND

