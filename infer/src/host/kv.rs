//! The host KV cache of the CPU fast path (DESIGN §6.2): per layer and KV head, keys as panels over
//! positions and values as panels over head dimensions, so attention over a long cache is two
//! kernel calls with no repacking.

use super::kernels::{PANEL, Panels};

/// Per layer, per KV head: keys as panels over positions (`[cap/16][head_dim][16]`, a `[positions,
/// head_dim]` matrix for [`super::kernels::matmul_panels`]) and values as panels over head dims
/// (`[head_dim/16][cap][16]`, a `[head_dim, positions]` matrix).
pub struct HostKv {
    /// Every layer's keys, then values, layer by layer and head by head (one mapping each, see
    /// [`Floats`]; [`HostKv::head_start`] finds a head).
    keys: Floats,
    values: Floats,
    layers: usize,
    /// Temporaries of [`super::layer::layer_forward`], kept across layers and calls so the hot path does not
    /// allocate (and fault in fresh pages) per layer.
    pub(crate) scratch: Scratch,
    /// Capacity rounded up to whole panels.
    cap: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl HostKv {
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Self {
        let cap = capacity.next_multiple_of(PANEL);
        let per_layer = kv_heads * cap * head_dim.next_multiple_of(PANEL);
        Self {
            scratch: Scratch::default(),
            keys: Floats::zeroed(layers * per_layer),
            values: Floats::zeroed(layers * per_layer),
            layers,
            cap,
            kv_heads,
            head_dim,
        }
    }

    /// Reads the key and value of KV head `h` at `pos` (`head_dim` each).
    pub fn read_kv(&self, layer: usize, h: usize, pos: usize, k: &mut [f32], v: &mut [f32]) {
        self.read(layer, h, pos, k, v)
    }

    /// Writes the key and value of KV head `h` at `pos`.
    pub fn write_kv(&mut self, layer: usize, h: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.write(layer, h, pos, k, v)
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn head_len(&self) -> usize {
        self.cap * self.head_dim.next_multiple_of(PANEL)
    }

    /// Where KV head `h` of `layer` starts in `keys` and in `values`.
    fn head_start(&self, layer: usize, h: usize) -> usize {
        (layer * self.kv_heads + h) * self.head_len()
    }

    /// Writes key/value vectors (`head_dim` each) of KV head `h` at `pos`.
    pub(crate) fn write(&mut self, layer: usize, h: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (hd, cap, base) = (self.head_dim, self.cap, self.head_start(layer, h));
        let kb = &mut self.keys[base..];
        let (panel, lane) = (pos / PANEL, pos % PANEL);
        for (kk, &x) in k.iter().enumerate() {
            kb[(panel * hd + kk) * PANEL + lane] = x;
        }
        let vb = &mut self.values[base..];
        for (d, &x) in v.iter().enumerate() {
            vb[(d / PANEL) * cap * PANEL + pos * PANEL + d % PANEL] = x;
        }
    }

    fn read(&self, layer: usize, h: usize, pos: usize, k: &mut [f32], v: &mut [f32]) {
        let (hd, cap, base) = (self.head_dim, self.cap, self.head_start(layer, h));
        let kb = &self.keys[base..];
        let (panel, lane) = (pos / PANEL, pos % PANEL);
        for (kk, x) in k.iter_mut().enumerate() {
            *x = kb[(panel * hd + kk) * PANEL + lane];
        }
        let vb = &self.values[base..];
        for (d, x) in v.iter_mut().enumerate() {
            *x = vb[(d / PANEL) * cap * PANEL + pos * PANEL + d % PANEL];
        }
    }

    /// Moves position `from` to `to` in every layer and head.
    pub fn move_position(&mut self, from: usize, to: usize) {
        let (hd, cap) = (self.head_dim, self.cap);
        let (fp, fl, tp, tl) = (from / PANEL, from % PANEL, to / PANEL, to % PANEL);
        for layer in 0..self.layers {
            for h in 0..self.kv_heads {
                let start = self.head_start(layer, h);
                let kb = &mut self.keys[start..];
                for kk in 0..hd {
                    kb[(tp * hd + kk) * PANEL + tl] = kb[(fp * hd + kk) * PANEL + fl];
                }
                let vb = &mut self.values[start..];
                for d0 in (0..hd).step_by(PANEL) {
                    let base = (d0 / PANEL) * cap * PANEL;
                    let n = PANEL.min(hd - d0);
                    vb.copy_within(
                        base + from * PANEL..base + from * PANEL + n,
                        base + to * PANEL,
                    );
                }
            }
        }
    }

    /// Keys or values of `layer` at positions `0..len`, as `[kv_heads, len, head_dim]` row-major.
    pub fn unpack(&self, layer: usize, len: usize, pick_keys: bool) -> Vec<f32> {
        let hd = self.head_dim;
        let mut out = vec![0f32; self.kv_heads * len * hd];
        let mut k = vec![0f32; hd];
        let mut v = vec![0f32; hd];
        for h in 0..self.kv_heads {
            for pos in 0..len {
                self.read(layer, h, pos, &mut k, &mut v);
                out[(h * len + pos) * hd..][..hd].copy_from_slice(if pick_keys { &k } else { &v });
            }
        }
        out
    }

    pub(crate) fn key_panels(&self, layer: usize, h: usize, total: usize) -> Panels<'_> {
        let len = self.head_len();
        Panels {
            data: &self.keys[self.head_start(layer, h)..][..len],
            n: total,
            k: self.head_dim,
            stride: self.head_dim * PANEL,
            first: 0,
        }
    }

    pub(crate) fn value_panels(&self, layer: usize, h: usize, total: usize) -> Panels<'_> {
        let len = self.head_len();
        Panels {
            data: &self.values[self.head_start(layer, h)..][..len],
            n: self.head_dim,
            k: total,
            stride: self.cap * PANEL,
            first: 0,
        }
    }
}

/// `n` f32 zeros with every page already touched, in an anonymous mapping of their own that
/// Linux is asked to back with huge pages (`MADV_HUGEPAGE`; transparent huge pages are commonly
/// set to `madvise`, as on the reference machine).
///
/// Why a mapping: attention streams the whole cache on every pass (92 MB at a 2000-token
/// context), and where the heap happened to put a cache decided which pages it got: in a paired
/// run the session created second measured 5–7 % faster than the first, whichever method it was
/// (a TokenSwift session that never drafts read 1.06–1.07× AR when created second and 0.91–0.99×
/// when created first). One mapping per cache, with huge pages where the system grants them,
/// gives every cache the same kind of pages whatever the order (DESIGN §6.2).
///
/// Why touched: a fresh mapping is faulted in lazily, so the first write to each page would fault
/// in the middle of decoding; here those faults are paid at allocation, by every method alike.
/// Falls back to the heap if the mapping fails.
enum Floats {
    Mapped(memmap2::MmapMut, usize),
    Heap(Vec<f32>),
}

impl Floats {
    fn zeroed(n: usize) -> Self {
        let mut floats = match memmap2::MmapMut::map_anon((n * 4).max(1)) {
            Ok(map) => {
                // A hint: without it (or where it is refused) the cache still works, on small
                // pages.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                Floats::Mapped(map, n)
            }
            Err(_) => Floats::Heap(vec![0f32; n]),
        };
        let v: &mut [f32] = &mut floats;
        for i in (0..n).step_by(1024) {
            // SAFETY: i < n; a volatile write so the store to a zeroed page is not elided.
            unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(i), 0.0) };
        }
        floats
    }
}

impl std::ops::Deref for Floats {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: the mapping holds n·4 bytes, page-aligned (so aligned for f32), zeroed at
            // creation and only ever written as f32; it lives as long as `self`.
            Floats::Mapped(map, n) => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<f32>(), *n)
            },
            Floats::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Floats {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            // SAFETY: as in `deref`; `&mut self` makes this the only reference.
            Floats::Mapped(map, n) => unsafe {
                std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<f32>(), *n)
            },
            Floats::Heap(v) => v,
        }
    }
}

/// Temporaries of [`super::layer::layer_forward`], kept across layers and calls so the hot path
/// does not allocate (and fault in fresh pages) per layer.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) normed: Vec<f32>,
    pub(crate) qkv: Vec<f32>,
    pub(crate) attn: Vec<f32>,
    pub(crate) qh: Vec<f32>,
    pub(crate) scores: Vec<f32>,
    pub(crate) oh: Vec<f32>,
    pub(crate) o: Vec<f32>,
    pub(crate) gu: Vec<f32>,
    pub(crate) act: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_kv_round_trips_and_moves_positions() {
        let mut kv = HostKv::new(2, 2, 8, 40);
        let k: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let v: Vec<f32> = (0..8).map(|x| 10.0 + x as f32).collect();
        kv.write(1, 1, 33, &k, &v);
        let (mut k2, mut v2) = (vec![0f32; 8], vec![0f32; 8]);
        kv.read(1, 1, 33, &mut k2, &mut v2);
        assert_eq!((k2.clone(), v2.clone()), (k.clone(), v.clone()));
        kv.move_position(33, 5);
        kv.read(1, 1, 5, &mut k2, &mut v2);
        assert_eq!((k2, v2), (k, v));
        let keys = kv.unpack(1, 6, true);
        assert_eq!(
            &keys[(6 + 5) * 8..(6 + 6) * 8],
            &[0., 1., 2., 3., 4., 5., 6., 7.]
        );
    }
}
