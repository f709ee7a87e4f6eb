// RaaS's whole per-step bookkeeping in one kernel: one thread block per (sequence, kv head)
// row opens a page where the token starts one (the free slot, else the stalest unpinned
// page), writes the token, scores every page by Quest's bound, stamps the top ratio of the
// live pages with the step and sets `visible`. The contract, and its torch reference, is
// raas_step_op.raas_bookkeeping; raas_step_cuda.py compiles and launches this file.
//
// Why one kernel: at batch 1 the same work as ~8 small kernels (victim, open + write, bound,
// rank, stamp, copies) took ~15 us of a 33 us step on the H200, although it reads only the
// row's metadata and summaries (~64 kB a row at L = 2048) and one token (issue 15; this
// kernel: ~6 us of a 23-26 us step, bench/NOTES.md session 17). A row loads its summaries
// at once into registers (ROUNDS * CPL 16-byte chunks per tensor a thread), its metadata
// into shared memory, and keeps every later step on chip. Where rows are few (batch 1), a
// row is a cluster of CLUSTER blocks, each bounding SC of its slots, so that more
// multiprocessors load and sum the summaries; the rank keys meet in distributed shared
// memory. The sequence's length is shared by the H rows of a sequence: the last row to arrive
// (a per-sequence counter) writes it.
//
// The rules, each as the torch code it replaces does it (cache/slots.choose_slot,
// cache/append.open_slot + append_token, scores.summary_bound, scores.top_fraction):
//   victim: a free slot (page -1) first; else the least timestamp, compared as float64,
//     among unpinned slots; ties to the smaller page id, then the lower slot; none usable:
//     slot 0, and the overflow flag;
//   bound: max over the GQA group of sum_d q+ kmax + q- kmin (summaries widened exactly,
//     +-inf and NaN as torch.nan_to_num), times scale; -inf for an empty slot. The sums run
//     in another order than torch's, so bounds agree to rounding, not bit for bit;
//   stamp: the ceil(live * num / den) live slots first by (bound desc, older page, lower
//     slot) get the step.
//
// Compile-time constants (-D): S slots, D head dim, G query heads per kv head, ELEM
// (0 float32, 1 bfloat16, 2 float16), THREADS, LPS (lanes per slot row: min(CPR, 32)),
// CPL (chunks per lane: CPR / LPS), where CPR = D * sizeof(elem) / 16, CLUSTER (blocks per
// row); raas_step_layout.py chooses them.

#ifndef ELEM
#define ELEM 1
#endif
#ifndef PROBE
#define PROBE 0  // timing probes only (wrong output): +1 no arrival, +2 no bound sums, +4 no
                 // rank, +8 return at once (the launch)
#endif

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
struct alignas(16) Chunk { u32 x, y, z, w; };  // 16 bytes of a summary row (no headers)

#if ELEM == 0
typedef float elem_t;
#define ES 4
#else
typedef unsigned short elem_t;
#define ES 2
#endif

#define VEC (16 / ES)                         // elements per 16-byte chunk
#define CPR (D / VEC)                         // chunks per summary row
#ifndef CLUSTER
#define CLUSTER 1  // blocks per row (a thread block cluster), each bounding SC of its slots
#endif
#define SC ((S + CLUSTER - 1) / CLUSTER)      // slots a block bounds and ranks
#define GROUPS (THREADS / LPS)                // slot rows processed at once
#define ROUNDS ((SC + GROUPS - 1) / GROUPS)   // slot rows per lane group
#define WARPS (THREADS / 32)
#define D_ITEMS ((D + THREADS - 1) / THREADS)  // K/V elements a thread copies
#define M_ITEMS ((S + THREADS - 1) / THREADS)  // slots' metadata a thread loads
#define Q_ITEMS ((G * D + THREADS - 1) / THREADS)  // query elements a thread loads
// threads counting one slot's rank: the largest power of two <= THREADS / SC, at most 32
#define RANK_SPLIT (THREADS >= 32 * SC ? 32 : THREADS >= 16 * SC ? 16 : THREADS >= 8 * SC ? 8 \
                    : THREADS >= 4 * SC ? 4 : THREADS >= 2 * SC ? 2 : 1)
#define FREE_PAGE (-1LL)
#define FULL_MASK 0xffffffffu

struct Smem {
    float q[G][D];          // the query heads of this kv head, widened, as q_at lays them out
    u32 key_bits[D];        // the new key in the summaries' dtype, as bits
    int fill[S];
    i64 ts[S];
    i64 page[S];
    unsigned char pinned[S];
    u64 order[S];           // (bound, older page) as one key, larger ranks first
    u64 red_key[WARPS];     // block argmin scratch
    int red_idx[WARPS];
    u64 min_key;
    int min_idx;
    i64 length;
};

__device__ __forceinline__ float widen(u32 bits) {  // one element's bits -> float
#if ELEM == 0
    return __uint_as_float(bits);
#elif ELEM == 1
    return __uint_as_float(bits << 16);
#else
    float f;
    unsigned short h = (unsigned short)bits;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

__device__ __forceinline__ float dtype_max() {  // torch.nan_to_num's stand-in for +inf
#if ELEM == 0
    return 3.4028234663852886e38f;
#elif ELEM == 1
    return 3.3895313892515355e38f;
#else
    return 65504.0f;
#endif
}

// Element e (a compile-time index after unrolling) of a 16-byte chunk, as raw bits.
__device__ __forceinline__ u32 chunk_bits(const Chunk& c, int e) {
    const u32 w[4] = {c.x, c.y, c.z, c.w};
#if ES == 4
    return w[e];
#else
    return (e & 1) ? (w[e >> 1] >> 16) : (w[e >> 1] & 0xffffu);
#endif
}

__device__ __forceinline__ void set_chunk_bits(Chunk& c, int e, u32 bits) {
    u32 w[4] = {c.x, c.y, c.z, c.w};
#if ES == 4
    w[e] = bits;
#else
    w[e >> 1] = (e & 1) ? ((w[e >> 1] & 0xffffu) | (bits << 16)) : ((w[e >> 1] & 0xffff0000u) | bits);
#endif
    c = Chunk{w[0], w[1], w[2], w[3]};
}

__device__ __forceinline__ u32 elem_bits(elem_t x) {
#if ES == 4
    return __float_as_uint(x);
#else
    return (u32)x;
#endif
}

// scores.order_key's high word: the float's bits made monotone (-0.0 as +0.0).
__device__ __forceinline__ u32 order_hi(float x) {
    u32 u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// A float64's bits made monotone as an unsigned key (no NaN: timestamps and +-inf only).
__device__ __forceinline__ u64 order_double(double x) {
    u64 u = (u64)__double_as_longlong(x);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// torch.minimum / maximum of two elements (NaN wins), as the chosen element's bits.
__device__ __forceinline__ u32 pick_min(u32 a, u32 b) {
    const float x = widen(a), y = widen(b);
    return (x != x) ? a : (y != y) ? b : (y < x ? b : a);
}
__device__ __forceinline__ u32 pick_max(u32 a, u32 b) {
    const float x = widen(a), y = widen(b);
    return (x != x) ? a : (y != y) ? b : (y > x ? b : a);
}

// Where element d of a query head sits in shared memory: by (element within its chunk,
// chunk), so the lanes of a slot row (consecutive chunks) read consecutive words, free of
// bank conflicts (by d, lanes 8 elements apart shared banks four ways).
__device__ __forceinline__ int q_at(int d) { return (d % VEC) * CPR + d / VEC; }

__device__ __forceinline__ bool finite(float x) {
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// This lane's share of sum_d q+ kmax + q- kmin for one slot row's chunk c (lo, hi: its
// kmin, kmax chunks) and each query head, added to part; SANITIZE: with the summaries as
// torch.nan_to_num leaves them (NaN -> 0, kmax's -inf and kmin's +inf -> 0, the other
// infinity -> the dtype's largest value).
template <bool SANITIZE>
__device__ __forceinline__ void add_chunk(const Chunk& lo, const Chunk& hi, int c, int glane,
                                          const Smem& sm, float (&part)[G]) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
        const int d = (c * LPS + glane) * VEC + e;
        float x = widen(chunk_bits(lo, e)), y = widen(chunk_bits(hi, e));
        if (SANITIZE) {
            const float inf = __int_as_float(0x7f800000);
            y = (y != y || y == -inf) ? 0.0f : (y == inf ? dtype_max() : y);
            x = (x != x || x == inf) ? 0.0f : (x == -inf ? -dtype_max() : x);
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float qd = sm.q[g][q_at(d)];
            part[g] += (qd > 0.0f ? qd : 0.0f) * y;  // two FMAs: q+ kmax + q- kmin
            part[g] += (qd < 0.0f ? qd : 0.0f) * x;
        }
    }
}

// part[g] summed over the LPS lanes of a slot row (every lane gets the total).
__device__ __forceinline__ void reduce_lanes(float (&part)[G]) {
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int off = LPS / 2; off > 0; off >>= 1)
            part[g] += __shfl_xor_sync(FULL_MASK, part[g], off);
}

// Thread block clusters (CLUSTER > 1): a barrier over the cluster's blocks in two halves,
// and a store into another block's shared memory (distributed shared memory).
__device__ __forceinline__ void cluster_arrive() {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ void store_in_block(const u64* local, u32 block, u64 value) {
    u32 at, remote;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(at) : "l"(local));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(at), "r"(block));
    asm volatile("st.shared::cluster.u64 [%0], %1;" :: "r"(remote), "l"(value) : "memory");
}

// Round r's slot row for lane group `group` of the block whose slots start at `first`: the
// slot, and whether it is one of this block's (within its SC and within S).
struct RoundSlot { int s; bool mine; };
__device__ __forceinline__ RoundSlot round_slot(int first, int r, int group) {
    const int local = r * GROUPS + group;
    return RoundSlot{first + local, local < SC && first + local < S};
}

// Lexicographic (key, index) minimum over the block; every thread gets the answer.
__device__ void block_argmin(u64& key, int& idx, Smem& sm) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const u64 k = __shfl_xor_sync(FULL_MASK, key, off);
        const int i = __shfl_xor_sync(FULL_MASK, idx, off);
        if (k < key || (k == key && i < idx)) { key = k; idx = i; }
    }
    if (lane == 0) { sm.red_key[warp] = key; sm.red_idx[warp] = idx; }
    __syncthreads();
    if (warp == 0) {
        key = lane < WARPS ? sm.red_key[lane] : ~0ull;
        idx = lane < WARPS ? sm.red_idx[lane] : 0x7fffffff;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const u64 k = __shfl_xor_sync(FULL_MASK, key, off);
            const int i = __shfl_xor_sync(FULL_MASK, idx, off);
            if (k < key || (k == key && i < idx)) { key = k; idx = i; }
        }
        if (lane == 0) { sm.min_key = key; sm.min_idx = idx; }
    }
    __syncthreads();
    key = sm.min_key;
    idx = sm.min_idx;
    __syncthreads();  // min_key / min_idx may be reused by the next call
}

extern "C" __global__ void __launch_bounds__(THREADS)
raas_step(elem_t* __restrict__ k_pool,        // [B, H, S*P, D]
          elem_t* __restrict__ v_pool,        // [B, H, S*P, D]
          int* __restrict__ fill,             // [B, H, S]
          int* __restrict__ visible,          // [B, H, S] out: fill
          i64* __restrict__ timestamp,        // [B, H, S]
          unsigned char* __restrict__ pinned, // [B, H, S] bool
          i64* __restrict__ page_id,          // [B, H, S]
          elem_t* __restrict__ kmin,          // [B, H, S, D]
          elem_t* __restrict__ kmax,          // [B, H, S, D]
          i64* __restrict__ current,          // [B, H]
          i64* __restrict__ length,           // [B]
          unsigned char* __restrict__ overflow,  // [] bool, sticky
          int* __restrict__ arrivals,         // [B] zeros between launches
          const i64* __restrict__ step_ptr,   // []
          const elem_t* __restrict__ k_new,   // [B, H, D] with strides k_sb, k_sh, 1
          const elem_t* __restrict__ v_new,   // [B, H, D] with strides v_sb, v_sh, 1
          const elem_t* __restrict__ q,       // [B, H, G, D] with strides q_sb, q_sh, q_sg, 1
          float* __restrict__ scores,         // [B, H, S] out: the bounds
          i64 k_sb, i64 k_sh, i64 v_sb, i64 v_sh, i64 q_sb, i64 q_sh, i64 q_sg,
          int H, int P, float scale, i64 ratio_num, i64 ratio_den) {
    __shared__ Smem sm;
#if __CUDA_ARCH__ >= 900
    // Launched with PDL (triton_pdl.py's invariant): wait for the previous kernel, then let
    // the next one launch. Without PDL the wait returns at once.
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    if (PROBE & 8) return;
    // A row's CLUSTER blocks: each loads the whole row's metadata and decides the victim
    // (the same on every block), bounds its SC slots and sends their rank keys to every
    // block of the cluster, then ranks and stamps its own slots; block 0 writes the token,
    // the opened slot's metadata and counts the token.
    const int row = blockIdx.x / CLUSTER, part_of_row = blockIdx.x % CLUSTER, tid = threadIdx.x;
    const bool lead = part_of_row == 0;
    const int first = part_of_row * SC;  // this block's slots: [first, first + SC) within S
    const int b = row / H, h = row - b * H;
    const i64 meta = (i64)row * S;
    const i64 n = length[b];  // tokens before this one
    const i64 step = *step_ptr;
    const bool need = n % P == 0;  // the token starts a page
    const int old_cur = (int)current[row];

    // Every load up front into registers, then the stores to shared memory: a warp stalls
    // at the first instruction that needs a value still in flight, so a store between two
    // loads would make the row wait for memory once per load (~1 us each, L2 cold).
    int f_r[M_ITEMS];
    i64 ts_r[M_ITEMS], page_r[M_ITEMS];
    unsigned char pin_r[M_ITEMS];
#pragma unroll
    for (int j = 0; j < M_ITEMS; ++j) {
        const int s = j * THREADS + tid;
        if (s < S) {
            f_r[j] = fill[meta + s];
            ts_r[j] = timestamp[meta + s];
            page_r[j] = page_id[meta + s];
            pin_r[j] = pinned[meta + s];
        }
    }
    elem_t q_r[Q_ITEMS];
#pragma unroll
    for (int j = 0; j < Q_ITEMS; ++j) {
        const int i = j * THREADS + tid, g = i / D, d = i - g * D;
        if (i < G * D) q_r[j] = q[b * q_sb + h * q_sh + g * q_sg + d];
    }
    elem_t k_el[D_ITEMS], v_el[D_ITEMS];
#pragma unroll
    for (int j = 0; j < D_ITEMS; ++j) {
        const int d = j * THREADS + tid;
        if (d < D) {
            k_el[j] = k_new[b * k_sb + h * k_sh + d];
            v_el[j] = v_new[b * v_sb + h * v_sh + d];
        }
    }
    const int group = tid / LPS, glane = tid - group * LPS;
    Chunk lo[ROUNDS][CPL], hi[ROUNDS][CPL];
#pragma unroll
    for (int r = 0; r < ROUNDS; ++r) {
        const RoundSlot slot = round_slot(first, r, group);
        const int s = slot.s;
#pragma unroll
        for (int c = 0; c < CPL; ++c) {
            const int chunk = c * LPS + glane;
            if (slot.mine) {
                lo[r][c] = reinterpret_cast<const Chunk*>(kmin + (meta + s) * D)[chunk];
                hi[r][c] = reinterpret_cast<const Chunk*>(kmax + (meta + s) * D)[chunk];
            } else {
                lo[r][c] = hi[r][c] = Chunk{0, 0, 0, 0};
            }
        }
    }
#pragma unroll
    for (int j = 0; j < M_ITEMS; ++j) {
        const int s = j * THREADS + tid;
        if (s < S) {
            sm.fill[s] = f_r[j];
            sm.ts[s] = ts_r[j];
            sm.page[s] = page_r[j];
            sm.pinned[s] = pin_r[j];
        }
    }
#pragma unroll
    for (int j = 0; j < Q_ITEMS; ++j) {
        const int i = j * THREADS + tid, g = i / D, d = i - g * D;
        if (i < G * D) sm.q[g][q_at(d)] = widen(elem_bits(q_r[j]));
    }
#pragma unroll
    for (int j = 0; j < D_ITEMS; ++j) {
        const int d = j * THREADS + tid;
        if (d < D) sm.key_bits[d] = elem_bits(k_el[j]);
    }
    if (tid == 0) sm.length = n;  // n has arrived (a use), before this row counts itself
    __syncthreads();
    // Arrive: once every row of the sequence has (each after reading length[b], above),
    // the last one may write it. Issued now, so its round trip overlaps the work below;
    // in a cluster, once every block of the row has read it (the cluster barrier below).
    int arrived = 0;
#if CLUSTER > 1
    cluster_arrive();  // this block has started and read length[b]
#else
    if (tid == 0 && !(PROBE & 1)) arrived = atomicAdd(&arrivals[b], 1);
#endif

    // The page's slot: the current one, or where the token starts a page, the victim.
    int cur = old_cur;
    bool room = true;
    if (need) {  // the same for the whole block
        u64 best = ~0ull;
        int best_slot = 0x7fffffff;
        bool usable_any = false;
        for (int s = tid; s < S; s += THREADS) {
            const bool usable = !sm.pinned[s];
            usable_any |= usable;
            const double primary = sm.page[s] == FREE_PAGE ? -__longlong_as_double(0x7ff0000000000000LL)
                                 : usable ? (double)sm.ts[s] : __longlong_as_double(0x7ff0000000000000LL);
            const u64 key = order_double(primary);
            if (key < best || (key == best && s < best_slot)) { best = key; best_slot = s; }
        }
        room = __syncthreads_or(usable_any);
        block_argmin(best, best_slot, sm);
        // Among the slots at that key and usable, the smaller page id, then the lower slot;
        // the others count as int64's max (none usable: slot 0, as torch's argmin).
        u64 oldest = ~0ull;
        int oldest_slot = 0x7fffffff;
        for (int s = tid; s < S; s += THREADS) {
            const bool usable = !sm.pinned[s];
            const double primary = sm.page[s] == FREE_PAGE ? -__longlong_as_double(0x7ff0000000000000LL)
                                 : usable ? (double)sm.ts[s] : __longlong_as_double(0x7ff0000000000000LL);
            const bool candidate = usable && order_double(primary) == best;
            const u64 key = candidate ? ((u64)sm.page[s] ^ 0x8000000000000000ull)
                                      : 0x7fffffffffffffffull ^ 0x8000000000000000ull;
            if (key < oldest || (key == oldest && s < oldest_slot)) { oldest = key; oldest_slot = s; }
        }
        block_argmin(oldest, oldest_slot, sm);
        cur = oldest_slot;
        if (tid == 0) {
            sm.fill[cur] = 0;
            sm.ts[cur] = step;
            sm.pinned[cur] = 0;
            sm.page[cur] = n / P;
        }
        __syncthreads();
    }
    if (tid == 0) sm.fill[cur] += 1;
    const i64 token = ((i64)row * S * P + (i64)cur * P + n % P) * D;
#pragma unroll
    for (int j = 0; j < D_ITEMS; ++j) {
        const int d = j * THREADS + tid;
        if (lead && d < D) { k_pool[token + d] = k_el[j]; v_pool[token + d] = v_el[j]; }
    }
    __syncthreads();

    // The current slot's summaries take the key (the key alone on a new page).
#pragma unroll
    for (int r = 0; r < ROUNDS; ++r) {
        const RoundSlot slot = round_slot(first, r, group);
        const int s = slot.s;
        if (!slot.mine || s != cur) continue;
#pragma unroll
        for (int c = 0; c < CPL; ++c) {
            const int chunk = c * LPS + glane;
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                const u32 key = sm.key_bits[chunk * VEC + e];
                set_chunk_bits(lo[r][c], e, need ? key : pick_min(chunk_bits(lo[r][c], e), key));
                set_chunk_bits(hi[r][c], e, need ? key : pick_max(chunk_bits(hi[r][c], e), key));
            }
            reinterpret_cast<Chunk*>(kmin + (meta + s) * D)[chunk] = lo[r][c];
            reinterpret_cast<Chunk*>(kmax + (meta + s) * D)[chunk] = hi[r][c];
        }
    }

    // Bounds: LPS lanes per slot row, each over CPL chunks of VEC elements. Summed first
    // as they are; torch.nan_to_num changes only non-finite summaries, which make a live
    // slot's sum non-finite, so only then does the warp sum again (from memory, where the
    // current row's update is already written) with them replaced.
    float part[ROUNDS][G];
    bool redo = false;
#pragma unroll
    for (int r = 0; r < ROUNDS; ++r) {
        const RoundSlot slot = round_slot(first, r, group);
        const int s = slot.s;
        const bool mine = slot.mine;
#pragma unroll
        for (int g = 0; g < G; ++g) part[r][g] = 0.0f;
#if !(PROBE & 2)
#pragma unroll
        for (int c = 0; c < CPL; ++c) add_chunk<false>(lo[r][c], hi[r][c], c, glane, sm, part[r]);
        reduce_lanes(part[r]);
#endif
#pragma unroll
        for (int g = 0; g < G; ++g) redo |= mine && sm.fill[s] > 0 && !finite(part[r][g]);
    }
    if (__any_sync(FULL_MASK, redo)) {
#pragma unroll
        for (int r = 0; r < ROUNDS; ++r) {
            const RoundSlot slot = round_slot(first, r, group);
            const int s = slot.s;
            const bool mine = slot.mine;
#pragma unroll
            for (int g = 0; g < G; ++g) part[r][g] = 0.0f;
#pragma unroll
            for (int c = 0; c < CPL; ++c) {
                const int chunk = c * LPS + glane;
                const Chunk low = mine ? reinterpret_cast<const Chunk*>(kmin + (meta + s) * D)[chunk]
                                       : Chunk{0, 0, 0, 0};
                const Chunk high = mine ? reinterpret_cast<const Chunk*>(kmax + (meta + s) * D)[chunk]
                                        : Chunk{0, 0, 0, 0};
                add_chunk<true>(low, high, c, glane, sm, part[r]);
            }
            reduce_lanes(part[r]);
        }
    }
#if CLUSTER > 1
    cluster_wait();  // every block of the row has started (its shared memory exists)
    if (lead && tid == 0 && !(PROBE & 1)) arrived = atomicAdd(&arrivals[b], 1);
#endif
#pragma unroll
    for (int r = 0; r < ROUNDS; ++r) {
        const RoundSlot slot = round_slot(first, r, group);
        const int s = slot.s;
        if (glane == 0 && slot.mine) {
            float bound = part[r][0];
#pragma unroll
            for (int g = 1; g < G; ++g) bound = part[r][g] > bound ? part[r][g] : bound;
            bound = sm.fill[s] > 0 ? bound * scale : -__int_as_float(0x7f800000);
            scores[meta + s] = bound;
            const i64 page = sm.page[s] < -1 ? -1 : sm.page[s];
            const u64 key = ((u64)order_hi(bound) << 32) | (u64)(u32)(2147483647LL - page);
            sm.order[s] = key;
#if CLUSTER > 1
#pragma unroll
            for (int other = 1; other < CLUSTER; ++other)
                store_in_block(&sm.order[s], (part_of_row + other) % CLUSTER, key);
#endif
        }
    }
#if CLUSTER > 1
    cluster_arrive();  // every key is in every block
    cluster_wait();
#endif
    // Live pages, and how many of them are stamped: ceil(live * num / den), in int64.
    int live = 0;
    for (int base = 0; base < S; base += THREADS) {
        const int s = base + tid;
        live += __syncthreads_count(s < S && sm.fill[s] > 0);
    }
    const i64 stamped = ((i64)live * ratio_num + (ratio_den - 1)) / ratio_den;

    // Each slot's rank by (bound desc, older page, lower slot), counted by RANK_SPLIT
    // neighbouring threads over every RANK_SPLIT-th other slot; the first `stamped` live
    // slots get the step. Then the row's metadata goes back.
    for (int base = 0; base < SC * RANK_SPLIT; base += THREADS) {  // the same trips for all
        const int local = (base + tid) / RANK_SPLIT, share = (base + tid) % RANK_SPLIT;
        const int s = first + local;
        const bool mine = local < SC && s < S;
        int rank = 0;
        if (mine) {
            const u64 mine = sm.order[s];
            for (int t = share; t < ((PROBE & 4) ? 0 : S); t += RANK_SPLIT) {
                const u64 other = sm.order[t];
                rank += (other > mine) | ((other == mine) & (t < s));
            }
        }
#pragma unroll
        for (int off = RANK_SPLIT / 2; off > 0; off >>= 1)
            rank += __shfl_xor_sync(FULL_MASK, rank, off);
        if (mine && share == 0) {
            const bool fresh = sm.fill[s] > 0 && rank < stamped;
            timestamp[meta + s] = fresh ? step : sm.ts[s];
            visible[meta + s] = sm.fill[s];
        }
    }
    if (lead && tid == 0) {
        fill[meta + cur] = sm.fill[cur];
        current[row] = cur;
        if (need) {
            page_id[meta + cur] = sm.page[cur];
            pinned[meta + cur] = 0;
            if (!room) *overflow = 1;
        }
    }
    // The last row of the sequence to arrive counts the token in `length`.
    if (lead && tid == 0 && arrived == H - 1) {
        length[b] = n + 1;
        arrivals[b] = 0;
    }
}
