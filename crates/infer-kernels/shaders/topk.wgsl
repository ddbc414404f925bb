// topk: the k largest of x[off .. off + n] as (value bits, index) pairs, best first
// (larger value first in f32::total_cmp order, then the lower index; NaN never selected;
// missing slots are (bits(-f32::MAX), 0xffffffff)). 1 <= k <= 256.
//
// Barrier-light, for CPU adapters (where a workgroup barrier costs a coroutine switch per
// 8 lanes) as well as GPUs. Values are compared as order-preserving u32 keys (key(v) >
// key(w) exactly when v > w in total_cmp order); key 0 (a NaN's) marks an empty slot,
// below every real item. Each invocation keeps a private sorted list (at most k entries)
// and inserts an item only when it beats the list's last entry and a workgroup threshold,
// so almost every item costs one integer compare.
//
//   stage 0: workgroup w owns items [w*64*m, (w+1)*64*m) (< n); invocation l of it scans
//            items w*64*m + 4l + 256j + c, c < 4 (lanes read neighbouring 16-byte units),
//            twice:
//            1. its own top r = ceil(k / 64) items among its first p.sample (<= m) items;
//               the k-th best of those 64*r (distinct) items is a lower bound tau on the
//               k-th best item of the workgroup (k distinct items are >= it): when
//               64*r = k the least of them (one atomic max of complements), else found
//               by ranking them in workgroup memory (two barriers);
//            2. its top k among the items with key >= tau, written as the sorted list
//               g = w*64 + l of the scratch: (key, index) pairs from scr[2*g*k], ended by
//               an empty pair (0, NONE) when shorter than k.
//   stage 1: one workgroup merges the T = p.threads sorted lists of the scratch (stage 0's
//            output): invocation l merges lists l, l + 64, ... (each up to its first entry
//            that does not make the top k) into list T + l; then the final merge of those
//            64 lists into out[0 .. 2k] as (value bits, index): after a storage barrier,
//            invocations 0..7 each merge 8 of them (8-way) into lists T + 64 .. T + 71,
//            and after another, invocation 0 merges those 8.
//   stage 2: T = 64 (one stage-0 workgroup, e.g. any vocabulary up to 65536 on CPU
//            adapters): stage 0, then the final merge of its 64 lists (through lists
//            64 .. 71), in one dispatch (each dispatch has a fixed cost).
// Bindings: 0 params, 1 x (f32 bits, read), 2 the scratch, 3 out (u32 pairs), 4 x again
// (vec4 loads).
// Workgroup size 64. Dispatch: stage 2 (1, 1, 1) when T = 64; else stage 0 (T / 64, 1, 1),
// T = 64 * ceil(n / (64 m)), then stage 1 (1, 1, 1).
// Params: select::TopkParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> scr: array<u32>;
@group(0) @binding(3) var<storage, read_write> outp: array<u32>;
// The same buffer as x, read 16 bytes at a time when off is a multiple of 4.
@group(0) @binding(4) var<storage, read> x4: array<vec4<u32>>;

const NONE: u32 = 0xffffffffu;
const MAX_K: u32 = 256u;

// This invocation's list, best first: order-preserving keys and indices; cnt entries.
var<private> keys: array<u32, 256>;
var<private> ids: array<u32, 256>;
var<private> cnt: u32;

// Stage 0: every invocation's top r (keys, indices) and the threshold.
var<workgroup> rep_key: array<u32, 256>;
var<workgroup> rep_id: array<u32, 256>;
var<workgroup> tau: u32;
// When k is a multiple of 64: the complement of the threshold (a max of complements, so
// the zero-initialised variable needs no set-up).
var<workgroup> tau_inv: atomic<u32>;

// The order-preserving key of f32 bits (0 for NaN).
fn key_of(bits: u32) -> u32 {
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn bits_of(key: u32) -> u32 {
    if ((key & 0x80000000u) != 0u) {
        return key & 0x7fffffffu;
    }
    return ~key;
}

// Does (a, i) come before (b, j)? Larger key first, then the lower index.
fn before(a: u32, i: u32, b: u32, j: u32) -> bool {
    return a > b || (a == b && i < j);
}

// Does (key, id) make a list of at most k entries (beat its last entry, or fill it)?
fn makes(key: u32, id: u32, k: u32) -> bool {
    if (cnt < k) {
        return key != 0u;
    }
    return before(key, id, keys[k - 1u], ids[k - 1u]);
}

// Inserts (key, id), which makes the list, keeping the order.
fn insert(key: u32, id: u32, k: u32) {
    var j = min(cnt, k - 1u);
    while (j > 0u && before(key, id, keys[j - 1u], ids[j - 1u])) {
        keys[j] = keys[j - 1u];
        ids[j] = ids[j - 1u];
        j--;
    }
    keys[j] = key;
    ids[j] = id;
    cnt = min(cnt + 1u, k);
}

// Items i .. i + 3 (i a multiple of 4) as f32 bits; those at or past end read as NaN.
fn load4(i: u32, end: u32) -> vec4<u32> {
    if (p.off % 4u == 0u && i + 3u < end) {
        return x4[(p.off + i) / 4u];
    }
    var v = vec4<u32>(0x7fc00000u);
    for (var c = 0u; c < 4u; c++) {
        if (i + c < end) {
            v[c] = x[p.off + i + c];
        }
    }
    return v;
}

// Stage 0 scan: this invocation's top k among its items with key > floor, the items
// first + 256 j + c (c < 4) below end, read 4 at a time. Items come in increasing index
// order, so an equal key never displaces an entry: a float compare of the 4 with the
// larger of floor and the list's last key (as a float) rejects almost every unit (and
// NaN), the exact key compare decides the rest.
fn scan(first: u32, end: u32, k: u32, floor: u32) {
    cnt = 0u;
    var kth = floor;
    // Keys below -inf's (0x007fffff) are NaN bit patterns as floats: a NaN bound would
    // reject every item (seen on NVIDIA when the threshold is -inf), so those get -inf.
    var lo = bitcast<f32>(0xff800000u); // -inf
    if (floor > 0x007fffffu) {
        lo = bitcast<f32>(bits_of(floor));
    }
    for (var i = first; i < end; i += 256u) {
        let v = load4(i, end);
        if (any(bitcast<vec4<f32>>(v) >= vec4<f32>(lo))) {
            for (var c = 0u; c < 4u; c++) {
                let key = key_of(v[c]);
                if (key > kth) {
                    insert(key, i + c, k);
                    if (cnt == k) {
                        kth = max(floor, keys[k - 1u]);
                        lo = bitcast<f32>(bits_of(kth));
                    }
                }
            }
        }
    }
}

// Merges sorted lists first, first + step, ... (< count) of at most k (key, index) pairs
// at scr[2 * list * k ..] into this invocation's list.
fn merge_lists(first: u32, step: u32, count: u32, k: u32) {
    for (var l = first; l < count; l += step) {
        let base = 2u * l * k;
        for (var r = 0u; r < k; r++) {
            let key = scr[base + 2u * r];
            let id = scr[base + 2u * r + 1u];
            if (!makes(key, id, k)) {
                break;
            }
            insert(key, id, k);
        }
    }
}

// Writes this invocation's list as list `list` of the scratch: cnt pairs, then an end
// marker when shorter than k.
fn write_list(list: u32, k: u32) {
    let base = 2u * list * k;
    for (var r = 0u; r < cnt; r++) {
        scr[base + 2u * r] = keys[r];
        scr[base + 2u * r + 1u] = ids[r];
    }
    if (cnt < k) {
        scr[base + 2u * cnt] = 0u;
        scr[base + 2u * cnt + 1u] = NONE;
    }
}

// The final merge of 64 sorted lists, in two levels: invocations 0..7 each merge 8 of them
// (8-way, k steps) into one of 8 lists after them in the scratch, then invocation 0 merges
// those 8 into out: 16 k compares on the longest path instead of a 64-way merge's 64 k.
var<private> pos: array<u32, 8>;
var<private> hk: array<u32, 8>;
var<private> hi: array<u32, 8>;

fn head(first: u32, l: u32, k: u32) {
    if (pos[l] < k) {
        let o = 2u * ((first + l) * k + pos[l]);
        hk[l] = scr[o];
        hi[l] = scr[o + 1u];
    } else {
        hk[l] = 0u;
        hi[l] = NONE;
    }
}

// Merges the 8 sorted lists first .. first + 7 of the scratch: the best k into list `dst`
// of the scratch (ended by an empty pair when shorter), or into out (dst = NONE: value bits
// and index, missing slots as (bits(-f32::MAX), NONE)).
fn merge8(first: u32, k: u32, dst: u32) {
    for (var l = 0u; l < 8u; l++) {
        pos[l] = 0u;
        head(first, l, k);
    }
    for (var r = 0u; r < k; r++) {
        var b = 0u;
        for (var l = 1u; l < 8u; l++) {
            if (before(hk[l], hi[l], hk[b], hi[b])) {
                b = l;
            }
        }
        if (hk[b] == 0u) {
            if (dst != NONE) {
                scr[2u * (dst * k + r)] = 0u;
                scr[2u * (dst * k + r) + 1u] = NONE;
                return;
            }
            for (var q = r; q < k; q++) {
                outp[2u * q] = bitcast<u32>(-3.4028235e38);
                outp[2u * q + 1u] = NONE;
            }
            return;
        }
        if (dst != NONE) {
            scr[2u * (dst * k + r)] = hk[b];
            scr[2u * (dst * k + r) + 1u] = hi[b];
        } else {
            outp[2u * r] = bits_of(hk[b]);
            outp[2u * r + 1u] = hi[b];
        }
        pos[b]++;
        head(first, b, k);
    }
}

// Every invocation calls this after writing list first + li (li < 64) of the scratch;
// lists first + 64 .. first + 71 are free.
fn merge_final(first: u32, li: u32, k: u32) {
    storageBarrier();
    if (li < 8u) {
        merge8(first + 8u * li, k, first + 64u + li);
    }
    storageBarrier();
    if (li == 0u) {
        merge8(first + 64u, k, NONE);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let k = min(p.k, MAX_K);
    if (p.stage != 1u) {
        let r = (k + 63u) / 64u;
        let start = wg.x * 64u * p.m;
        let end = min(start + 64u * p.m, p.n);
        if (li == 0u) {
            tau = 0u;
        }
        // 1. This invocation's top r.
        scan(start + 4u * li, min(end, start + 64u * p.sample), r, 0u);
        var t = 0u;
        if (64u * r == k) {
            // Exactly k representatives: the threshold is the least of them (0 when an
            // invocation has fewer than r), found with one atomic instead of ranking.
            atomicMax(&tau_inv, ~select(0u, keys[r - 1u], cnt == r));
            workgroupBarrier();
            t = ~atomicLoad(&tau_inv);
        } else {
            // To workgroup memory; the representative of rank k - 1 (if there are k) is
            // the threshold.
            for (var q = 0u; q < r; q++) {
                rep_key[li * r + q] = select(0u, keys[q], q < cnt);
                rep_id[li * r + q] = select(NONE, ids[q], q < cnt);
            }
            workgroupBarrier();
            for (var q = 0u; q < cnt; q++) {
                let a = keys[q];
                let ai = ids[q];
                var rank = 0u;
                for (var o = 0u; o < 64u * r; o++) {
                    rank += u32(before(rep_key[o], rep_id[o], a, ai));
                }
                if (rank == k - 1u) {
                    tau = a;
                }
            }
            t = workgroupUniformLoad(&tau);
        }
        // 2. This invocation's top k among items with key >= tau.
        scan(start + 4u * li, end, k, max(t, 1u) - 1u);
        write_list(wg.x * 64u + li, k);
        if (p.stage == 2u) {
            // One workgroup: its 64 lists merged in the same dispatch.
            merge_final(0u, li, k);
        }
        return;
    }
    cnt = 0u;
    merge_lists(li, 64u, p.threads, k);
    write_list(p.threads + li, k);
    merge_final(p.threads, li, k);
}
