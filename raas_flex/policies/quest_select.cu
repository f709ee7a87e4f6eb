// Quest's whole per-step selection in one kernel: one thread block per (sequence, kv head)
// row picks the k slots first by (bound desc, older page) among the held ones, the current
// slot first, and writes `visible`, the block count and the block list (see
// keep_all_ops.quest_blocks for the contract; quest_select_cuda.py compiles and launches it).
//
// Why CUDA C++ and not Triton: the select is latency-bound (a row's 9,217 bounds are 37 kB
// that sit in L2), and what it needs per radix pass is a shared-memory histogram and a
// block-wide scan. The two-stage Triton select spent 8.8 + 12-15 us on it at 128k on the
// H200 (issue 15). Here a row is one block of THREADS threads holding ITEMS keys each in
// registers; the keys are taken relative to the least held one, so the radix passes (11
// bits each) cover only the span of the row's bounds (~2^22 for Quest's: two passes).
//
// Compile-time constants (-D): THREADS (a multiple of 32, <= 1024, dividing BINS), ITEMS
// (ceil(S / THREADS) for the largest S launched with this build, <= 32), AGGREGATE.

#ifndef THREADS
#define THREADS 1024
#endif
#ifndef ITEMS
#define ITEMS 10
#endif
#ifndef AGGREGATE
#define AGGREGATE 0  // 1: warp-aggregated histogram atomics (__match_any_sync)
#endif
#ifndef PROBE_NO_SEARCH
#define PROBE_NO_SEARCH 0  // 1: choose nothing, skip the search (a timing probe: wrong output)
#endif
#define BINS 2048
#define WARPS (THREADS / 32)
#define BINS_PER_THREAD (BINS / THREADS)
#define FULL_MASK 0xffffffffu

typedef unsigned int u32;

struct Smem {
    u32 hist[2][BINS];       // radix histograms, alternating so a pass need not clear its own
    u32 warp_total[WARPS];   // a pass's per-warp sums, then their suffix sums
    u32 digit, above, equal; // a pass's outcome
    u32 key_min[WARPS], key_max[WARPS];  // the span of the held keys but the current slot's
    u32 base[ITEMS][WARPS];  // compaction: chosen slots before (item round, warp)
    int spare;               // the highest slot that holds nothing, or -1
};

// scores.order_key's high word: the float's bits made monotone (-0.0 as +0.0).
__device__ __forceinline__ u32 order_hi(float x) {
    u32 u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The need-th largest key among the entries whose bit j of `valid` is set (keys < 2^bits,
// bits >= 1, need >= 1, and at least need such entries): its value, and how many valid keys
// are above it / equal to it. Every thread of the block calls it with the same arguments and
// gets the same answers. Passes of up to 11 bits from the top (a BINS-bin histogram each);
// `buffer` alternates the histogram per pass and is left pointing at the next one, which
// the last pass has already cleared.
__device__ void kth_largest(const u32 (&key)[ITEMS], u32 valid, int bits, u32 need, Smem& sm,
                            int& buffer, u32& value, u32& above, u32& equal) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    u32 prefix = 0, above_total = 0;
    for (int top = bits; top > 0;) {
        const int width = top < 11 ? top : 11;
        const int shift = top - width;
        const u32 prefix_mask = top >= 32 ? 0u : ~0u << top;  // the bits found so far
        const u32 digit_mask = (1u << width) - 1u;
        u32* hist = sm.hist[buffer];
        u32* other = sm.hist[buffer ^ 1];
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            const bool take = ((valid >> j) & 1u) && ((key[j] & prefix_mask) == prefix);
            const u32 digit = (key[j] >> shift) & digit_mask;
#if AGGREGATE
            const u32 active = __ballot_sync(FULL_MASK, take);
            if (take) {  // one atomic per distinct digit of the warp
                const u32 peers = __match_any_sync(active, digit);
                if (__ffs(peers) - 1 == lane) atomicAdd(&hist[digit], __popc(peers));
            }
#else
            if (take) atomicAdd(&hist[digit], 1u);
#endif
        }
#pragma unroll
        for (int i = 0; i < BINS_PER_THREAD; ++i) other[tid * BINS_PER_THREAD + i] = 0;
        __syncthreads();
        // This thread's bins, [tid * BINS_PER_THREAD, ...): #(digit >= d) by a suffix scan.
        u32 mine[BINS_PER_THREAD];
        u32 x = 0;
#pragma unroll
        for (int i = 0; i < BINS_PER_THREAD; ++i) { mine[i] = hist[tid * BINS_PER_THREAD + i]; x += mine[i]; }
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const u32 y = __shfl_down_sync(FULL_MASK, x, off);
            if (lane + off < 32) x += y;
        }
        if (lane == 0) sm.warp_total[warp] = x;
        __syncthreads();
        if (warp == 0) {
            u32 w = lane < WARPS ? sm.warp_total[lane] : 0;
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
                const u32 y = __shfl_down_sync(FULL_MASK, w, off);
                if (lane + off < 32) w += y;
            }
            if (lane < WARPS) sm.warp_total[lane] = w;
        }
        __syncthreads();
        u32 at_least = x + (warp + 1 < WARPS ? sm.warp_total[warp + 1] : 0u);  // #(digit >= first bin)
#pragma unroll
        for (int i = 0; i < BINS_PER_THREAD; ++i) {
            const u32 beyond = at_least - mine[i];  // #(digit > this bin)
            if (at_least >= need && beyond < need) {
                sm.digit = tid * BINS_PER_THREAD + i;
                sm.above = beyond;
                sm.equal = mine[i];
            }
            at_least = beyond;
        }
        __syncthreads();
        need -= sm.above;
        above_total += sm.above;
        prefix |= sm.digit << shift;
        equal = sm.equal;
        buffer ^= 1;
        top = shift;
    }
    value = prefix;
    above = above_total;
}

__device__ __forceinline__ int significant_bits(u32 x) { return x ? 32 - __clz(x) : 0; }

extern "C" __global__ void __launch_bounds__(THREADS)
quest_select(const float* __restrict__ scores,       // [R, S] Quest bounds, -inf if empty
             const long long* __restrict__ page_id,  // [R, S] logical page, -1 if none
             const int* __restrict__ fill,           // [R, S] tokens held per slot
             const long long* __restrict__ current,  // [R] the slot being filled
             int* __restrict__ visible,              // [R, S] out: fill where chosen, else 0
             int* __restrict__ count,                // [R] out: k
             int* __restrict__ index,                // [R, S] out: chosen slots (slot order),
                                                     //   a spare slot up to k, then zeros
             int S, int k) {
    __shared__ Smem sm;
#if __CUDA_ARCH__ >= 900
    // Launched with PDL (triton_pdl.py's invariant): wait for the previous kernel, then let
    // the next one launch. Without PDL the wait returns at once.
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    const int row = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float* row_scores = scores + (long long)row * S;
    const int* row_fill = fill + (long long)row * S;
    const int cur = (int)current[row];

#pragma unroll
    for (int i = 0; i < BINS_PER_THREAD; ++i) sm.hist[0][tid * BINS_PER_THREAD + i] = 0;
    if (tid == 0) sm.spare = -1;

    // Keys: scores.order_key's high word. The current slot ranks first (an +inf bound), but
    // an +inf key would stretch the span of keys the radix passes cover (~2^22 for Quest's
    // bounds), so it gets one more than the greatest other held key (or ties it where that
    // key is itself +inf's), which keeps every comparison the torch rule makes.
    u32 hi[ITEMS];
    int held_fill[ITEMS];
    u32 valid = 0;
    int spare = -1;
    u32 lowest = 0xffffffffu, highest = 0;  // over held slots but the current one
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        const int s = j * THREADS + tid;
        float score = 0.0f;
        int f = 0;
        if (s < S) { score = row_scores[s]; f = row_fill[s]; }
        hi[j] = order_hi(score);
        held_fill[j] = f;
        if (f > 0) {
            valid |= 1u << j;
            if (s != cur) {
                lowest = hi[j] < lowest ? hi[j] : lowest;
                highest = hi[j] > highest ? hi[j] : highest;
            }
        } else if (s < S) {
            spare = s;
        }
    }
    // Block reductions: the highest empty slot (the list's filler when fewer than k slots
    // are held), #held (need = min(k, #held)) and the span of the other held keys.
    int held_count = __popc(valid);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const int other_spare = __shfl_xor_sync(FULL_MASK, spare, off);
        spare = other_spare > spare ? other_spare : spare;
        held_count += __shfl_xor_sync(FULL_MASK, held_count, off);
        const u32 other_low = __shfl_xor_sync(FULL_MASK, lowest, off);
        const u32 other_high = __shfl_xor_sync(FULL_MASK, highest, off);
        lowest = other_low < lowest ? other_low : lowest;
        highest = other_high > highest ? other_high : highest;
    }
    __syncthreads();  // hist[0] cleared, sm.spare set
    if (lane == 0) {
        if (spare >= 0) atomicMax(&sm.spare, spare);
        sm.warp_total[warp] = held_count;
        sm.key_min[warp] = lowest;
        sm.key_max[warp] = highest;
    }
    __syncthreads();
    u32 held_total = 0;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
        held_total += sm.warp_total[w];
        lowest = sm.key_min[w] < lowest ? sm.key_min[w] : lowest;
        highest = sm.key_max[w] > highest ? sm.key_max[w] : highest;
    }
    const u32 need = held_total < (u32)k ? held_total : (u32)k;
    __syncthreads();  // warp_total is reused by the search
    if (lowest > highest) lowest = highest = 0;  // no held slot but (maybe) the current one
    const u32 top_key = highest - lowest;  // relative keys of the others: [0, top_key]
    const u32 current_key = highest == 0xff800000u ? top_key : top_key + 1;  // 0xff800000: +inf
#pragma unroll
    for (int j = 0; j < ITEMS; ++j)
        hi[j] = j * THREADS + tid == cur ? current_key : hi[j] - lowest;
    int bits = significant_bits(current_key);
    bits = bits > 0 ? bits : 1;

    u32 chosen = 0;
    if (need > 0 && !PROBE_NO_SEARCH) {
        int buffer = 0;
        u32 threshold, above, equal;
        kth_largest(hi, valid, bits, need, sm, buffer, threshold, above, equal);
        u32 tie = 0, take_all_ties = 1, lo_threshold = 0;
        u32 lo[ITEMS] = {};
        if (equal > need - above) {  // more keys tie at the threshold than are left: older pages first
            take_all_ties = 0;
            const long long* row_page = page_id + (long long)row * S;
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                const int s = j * THREADS + tid;
                if (((valid >> j) & 1u) && hi[j] == threshold) {
                    tie |= 1u << j;
                    long long p = row_page[s];
                    lo[j] = (u32)(2147483647LL - (p < -1 ? -1 : p));
                }
            }
            u32 lo_above, lo_equal;
            kth_largest(lo, tie, 31, need - above, sm, buffer, lo_threshold, lo_above, lo_equal);
        }
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            const bool v = (valid >> j) & 1u;
            const bool pick = v && (hi[j] > threshold ||
                                    (hi[j] == threshold && (take_all_ties || lo[j] >= lo_threshold)));
            if (pick) chosen |= 1u << j;
        }
    }

    // The chosen slots in slot order: slot = j * THREADS + tid, so (round j, warp, lane)
    // order is slot order; offsets from the per-(round, warp) counts.
    u32 ballots[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        ballots[j] = __ballot_sync(FULL_MASK, (chosen >> j) & 1u);
        if (lane == 0) sm.base[j][warp] = __popc(ballots[j]);
    }
    __syncthreads();
    if (warp == 0) {  // exclusive scan of the ITEMS * WARPS counts, lane l owning a run of them
        const int per_lane = (ITEMS * WARPS + 31) / 32;
        u32* flat = &sm.base[0][0];
        u32 run = 0;
        for (int i = 0; i < per_lane; ++i) {
            const int e = lane * per_lane + i;
            if (e < ITEMS * WARPS) run += flat[e];
        }
        u32 incl = run;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const u32 y = __shfl_up_sync(FULL_MASK, incl, off);
            if (lane >= off) incl += y;
        }
        u32 offset = incl - run;
        for (int i = 0; i < per_lane; ++i) {
            const int e = lane * per_lane + i;
            if (e < ITEMS * WARPS) { const u32 c = flat[e]; flat[e] = offset; offset += c; }
        }
    }
    __syncthreads();

    int* row_visible = visible + (long long)row * S;
    int* row_index = index + (long long)row * S;
    const int fill_to = k < S ? k : S;
    const int spare_slot = sm.spare;
    const u32 below_me = (1u << lane) - 1u;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        const int s = j * THREADS + tid;
        const bool pick = (chosen >> j) & 1u;
        if (s < S) {
            row_visible[s] = pick ? held_fill[j] : 0;
            if (s >= (int)need) row_index[s] = s < fill_to ? spare_slot : 0;
        }
        if (pick) row_index[sm.base[j][warp] + __popc(ballots[j] & below_me)] = s;
    }
    if (tid == 0) count[row] = k;
}
