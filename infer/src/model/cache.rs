//! The key/value cache: preallocated once per session for every layer, written in place, with
//! bounds-checked `rollback_to`, `reset` and `keep` (compaction of an accepted tree path).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{InferError, Result};
use crate::host::kv::HostKv;
use crate::tensor::to_host_f32;

use super::config::ModelConfig;

/// Where the keys and values live.
// One per cache, moved never: the device variant's inline tensors cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum KvStore {
    /// One device tensor each for keys and values, `[layers, kv_heads, capacity, head_dim]` (an
    /// `Option` so it can be moved out and updated in place while uniquely owned): the burn-ops
    /// path. Stacked over layers so that a step's cache updates (compaction, partial-cache writes
    /// and gathers) are a fixed number of ops whatever the depth of the model (DESIGN §5).
    Device {
        keys: Option<Tensor<4>>,
        values: Option<Tensor<4>>,
    },
    /// Host memory in the CPU kernel's panel layout: the CPU fast path.
    Host(Box<HostKv>),
}

/// Keys and values of every layer, filled up to `len`.
pub struct KvCache {
    store: KvStore,
    device: Device,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Allocates a cache of `capacity` positions for every layer of `config`: in host memory when
    /// `host` (the CPU fast path), else on `device` as `dtype`.
    pub fn new(
        config: &ModelConfig,
        capacity: usize,
        device: &Device,
        dtype: DType,
        host: bool,
    ) -> Self {
        let (layers, h, d) = (config.num_layers, config.num_kv_heads, config.head_dim);
        let store = if host {
            KvStore::Host(Box::new(HostKv::new(layers, h, d, capacity)))
        } else {
            let make = || Some(Tensor::zeros([layers, h, capacity, d], (device, dtype)));
            KvStore::Device {
                keys: make(),
                values: make(),
            }
        };
        Self {
            store,
            device: device.clone(),
            len: 0,
            capacity,
        }
    }

    /// Keys of `layer` at positions `0..len()` as `[kv_heads, len, head_dim]`, on the host.
    pub fn host_keys(&self, layer: usize) -> Vec<f32> {
        match &self.store {
            KvStore::Host(h) => h.unpack(layer, self.len, true),
            KvStore::Device { .. } => {
                let k = self.keys(layer);
                let d = k.dims()[2] as i64;
                to_host_f32(k.reshape([-1, d]))
            }
        }
    }

    /// Fills this cache from `src`: slot `s` of KV head `h` in `layer` receives `src`'s position
    /// `positions[layer][h][s]`; the length becomes the number of slots. Used to build the partial
    /// cache from the full one. On the device: one gather and one write per layer and tensor,
    /// batched over heads and slots (not one copy per layer × head × slot).
    pub fn fill_from(&mut self, src: &KvCache, positions: &[Vec<Vec<usize>>]) -> Result<()> {
        let n = positions
            .first()
            .and_then(|l| l.first())
            .map_or(0, Vec::len);
        if n > self.capacity {
            return Err(InferError::Cache(format!(
                "{n} selected positions exceed the partial cache's {} slots",
                self.capacity
            )));
        }
        let bad = positions
            .iter()
            .flatten()
            .any(|p| p.len() != n || p.iter().any(|&x| x >= src.len));
        if bad {
            return Err(InferError::Cache(format!(
                "cannot fill {n} slots from positions outside the {} cached ones (or of unequal counts)",
                src.len
            )));
        }
        match (&mut self.store, &src.store) {
            (
                KvStore::Device { keys, values },
                KvStore::Device {
                    keys: sk,
                    values: sv,
                },
            ) if n > 0 => {
                // Rows of the source seen as `[layers × kv_heads × capacity, head_dim]`: one
                // `select` of `layers × kv_heads × n` whole rows and one write, per tensor.
                let [layers, h, src_cap, d] = sk.as_ref().expect("cache slot present").dims();
                let idx: Vec<i64> = positions
                    .iter()
                    .enumerate()
                    .flat_map(|(l, heads)| {
                        heads.iter().enumerate().flat_map(move |(hh, pos)| {
                            pos.iter()
                                .map(move |&p| ((l * h + hh) * src_cap + p) as i64)
                        })
                    })
                    .collect();
                let rows = idx.len();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows]), &src.device);
                for (dst, s) in [(keys, sk), (values, sv)] {
                    let picked: Tensor<4> = s
                        .as_ref()
                        .expect("cache slot present")
                        .clone()
                        .reshape([layers * h * src_cap, d])
                        .select(0, idx.clone())
                        .reshape([layers, h, n, d]);
                    let t = dst.take().expect("cache slot present");
                    *dst = Some(t.slice_assign([0..layers, 0..h, 0..n, 0..d], picked));
                }
            }
            _ => {
                for (layer, heads) in positions.iter().enumerate() {
                    for (h, pos) in heads.iter().enumerate() {
                        for (slot, &p) in pos.iter().enumerate() {
                            self.copy_position(src, layer, h, p, slot)?;
                        }
                    }
                }
            }
        }
        self.len = n;
        Ok(())
    }

    /// Writes `src`'s positions `from[i]` into slots `to + i`, for every layer and KV head. On the
    /// device: one gather and one write per tensor, however many positions, heads and layers.
    pub fn copy_positions(&mut self, src: &KvCache, from: &[usize], to: usize) -> Result<()> {
        let n = from.len();
        if from.iter().any(|&p| p >= src.len) || to + n > self.capacity {
            return Err(InferError::Cache(format!(
                "cannot copy positions {from:?} (of {}) into slots {to}..{} (of {})",
                src.len,
                to + n,
                self.capacity
            )));
        }
        if n == 0 {
            return Ok(());
        }
        match (&mut self.store, &src.store) {
            (KvStore::Host(dst), KvStore::Host(s)) => {
                let hd = s.head_dim();
                let (mut k, mut v) = (vec![0f32; hd], vec![0f32; hd]);
                for layer in 0..s.layers() {
                    for h in 0..s.kv_heads() {
                        for (i, &p) in from.iter().enumerate() {
                            s.read_kv(layer, h, p, &mut k, &mut v);
                            dst.write_kv(layer, h, to + i, &k, &v);
                        }
                    }
                }
            }
            (
                KvStore::Device { keys, values },
                KvStore::Device {
                    keys: sk,
                    values: sv,
                },
            ) => {
                let idx: Vec<i64> = from.iter().map(|&p| p as i64).collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
                for (dst, s) in [(keys, sk), (values, sv)] {
                    let st = s.as_ref().expect("cache slot present");
                    let [layers, h, _, d] = st.dims();
                    let picked = st.clone().select(2, idx.clone());
                    let t = dst.take().expect("cache slot present");
                    *dst = Some(t.slice_assign([0..layers, 0..h, to..to + n, 0..d], picked));
                }
            }
            _ => {
                return Err(InferError::Cache(
                    "cannot copy between a host cache and a device cache".into(),
                ));
            }
        }
        Ok(())
    }

    /// Copies `src`'s key/value at position `from` (KV head `h` of `layer`) into slot `to`.
    pub fn copy_position(
        &mut self,
        src: &KvCache,
        layer: usize,
        h: usize,
        from: usize,
        to: usize,
    ) -> Result<()> {
        if from >= src.len || to >= self.capacity {
            return Err(InferError::Cache(format!(
                "cannot copy position {from} (of {}) into slot {to} (of {})",
                src.len, self.capacity
            )));
        }
        match (&mut self.store, &src.store) {
            (KvStore::Host(dst), KvStore::Host(s)) => {
                let hd = s.head_dim();
                let (mut k, mut v) = (vec![0f32; hd], vec![0f32; hd]);
                s.read_kv(layer, h, from, &mut k, &mut v);
                dst.write_kv(layer, h, to, &k, &v);
            }
            (
                KvStore::Device { keys, values },
                KvStore::Device {
                    keys: sk,
                    values: sv,
                },
            ) => {
                for (dst, s) in [(keys, sk), (values, sv)] {
                    let st = s.as_ref().expect("cache slot present");
                    let d = st.dims()[3];
                    let l = layer..layer + 1;
                    let piece = st
                        .clone()
                        .slice([l.clone(), h..h + 1, from..from + 1, 0..d]);
                    let t = dst.take().expect("cache slot present");
                    *dst = Some(t.slice_assign([l, h..h + 1, to..to + 1, 0..d], piece));
                }
            }
            _ => {
                return Err(InferError::Cache(
                    "cannot copy between a host cache and a device cache".into(),
                ));
            }
        }
        Ok(())
    }

    /// Sets the length after slots were written directly (bounds-checked).
    pub fn set_len(&mut self, n: usize) -> Result<()> {
        if n > self.capacity {
            return Err(InferError::Cache(format!(
                "cannot set the cache length to {n}: its capacity is {}",
                self.capacity
            )));
        }
        self.len = n;
        Ok(())
    }

    /// Whether the cache is in host memory (the CPU fast path).
    pub fn is_host(&self) -> bool {
        matches!(self.store, KvStore::Host(_))
    }

    pub(crate) fn host_mut(&mut self) -> &mut HostKv {
        match &mut self.store {
            KvStore::Host(h) => h,
            KvStore::Device { .. } => panic!("a host cache was expected (checked by forward)"),
        }
    }

    /// Number of positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of positions allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Checks that `new` more positions fit.
    pub fn ensure_room(&self, new: usize) -> Result<()> {
        if self.len + new > self.capacity {
            return Err(InferError::Cache(format!(
                "the KV cache holds {} of {} positions and cannot take {new} more; raise the context or shorten the request",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Writes `[1, kv_heads, q, head_dim]` keys and values at positions `len..len+q` of `layer`
    /// and returns views `[1, kv_heads, len+q, head_dim]` of positions `0..len+q` (strided views
    /// of the stacked tensors: no copy). The length is advanced by [`KvCache::commit`].
    pub(crate) fn write_and_view(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let KvStore::Device { keys, values } = &mut self.store else {
            panic!("a device cache was expected (checked by forward)");
        };
        let [_, h, q, d] = k.dims();
        let l = layer..layer + 1;
        let range = [l.clone(), 0..h, self.len..self.len + q, 0..d];
        let total = self.len + q;
        let view = [l, 0..h, 0..total, 0..d];
        let write = |slot: &mut Option<Tensor<4>>, new: Tensor<4>| {
            // In place: the previous layer's views were dropped with its attention.
            let t = slot
                .take()
                .expect("cache slot present")
                .slice_assign(range.clone(), new);
            let v = t.clone().slice(view.clone());
            *slot = Some(t);
            v
        };
        (write(keys, k), write(values, v))
    }

    /// Marks `q` positions written by the last forward pass as filled.
    pub(crate) fn commit(&mut self, q: usize) {
        self.len += q;
    }

    /// Drops every position from `n` on.
    pub fn rollback_to(&mut self, n: usize) -> Result<()> {
        if n > self.len {
            return Err(InferError::Cache(format!(
                "cannot roll the KV cache back to {n} positions: it holds only {}",
                self.len
            )));
        }
        self.len = n;
        Ok(())
    }

    /// Empties the cache (the allocation is kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps positions `0..start` and the positions `indices` (ascending, all `>= start` and
    /// `< len`), moving the latter to `start..start + indices.len()`; drops the rest. This is how
    /// the accepted path of a verified tree becomes contiguous.
    pub fn keep(&mut self, start: usize, indices: &[usize]) -> Result<()> {
        let bad = start > self.len
            || indices.windows(2).any(|w| w[0] >= w[1])
            || indices.iter().any(|&i| i < start || i >= self.len);
        if bad {
            return Err(InferError::Cache(format!(
                "cannot keep positions {indices:?} after {start}: they must be ascending and within {start}..{}",
                self.len
            )));
        }
        let n = indices.len();
        // Already contiguous (the common case of a fully accepted chain): nothing to move.
        if indices.iter().enumerate().all(|(j, &i)| i == start + j) {
            self.len = start + n;
            return Ok(());
        }
        match &mut self.store {
            KvStore::Host(host) => {
                // Ascending sources at or after their destinations: moving in order never
                // overwrites a source still to be read.
                for (j, &src) in indices.iter().enumerate() {
                    if src != start + j {
                        host.move_position(src, start + j);
                    }
                }
            }
            KvStore::Device { keys, values } => {
                // One gather and one write per tensor, batched over layers and heads.
                let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
                for slot in [keys, values] {
                    let t = slot.take().expect("cache slot present");
                    let [layers, h, _, d] = t.dims();
                    let picked = t.clone().select(2, idx.clone());
                    *slot = Some(t.slice_assign([0..layers, 0..h, start..start + n, 0..d], picked));
                }
            }
        }
        self.len = start + n;
        Ok(())
    }

    fn layer_view(&self, layer: usize, pick_keys: bool) -> Tensor<3> {
        match &self.store {
            KvStore::Host(host) => {
                let data = host.unpack(layer, self.len, pick_keys);
                let shape = [host.kv_heads(), self.len, host.head_dim()];
                Tensor::from_data(TensorData::new(data, shape), &self.device)
            }
            KvStore::Device { keys, values, .. } => {
                let t = if pick_keys { keys } else { values };
                let t = t.as_ref().expect("cache slot present");
                // A whole layer is contiguous, so the reshape is a view; then the first `len`.
                let [_, h, cap, d] = t.dims();
                t.clone()
                    .slice([layer..layer + 1, 0..h, 0..cap, 0..d])
                    .reshape([h, cap, d])
                    .narrow(1, 0, self.len)
            }
        }
    }

    /// On the device, the keys of every layer at positions `0..len()`, `[layers, kv_heads, len,
    /// head_dim]` (a view of the stacked tensor); `None` for a host cache.
    pub fn device_keys(&self) -> Option<Tensor<4>> {
        match &self.store {
            KvStore::Host(_) => None,
            KvStore::Device { keys, .. } => {
                let t = keys.as_ref().expect("cache slot present");
                let [layers, h, _, d] = t.dims();
                Some(t.clone().slice([0..layers, 0..h, 0..self.len, 0..d]))
            }
        }
    }

    /// Keys of `layer`, `[kv_heads, len, head_dim]` (for inspection and partial-cache selection).
    pub fn keys(&self, layer: usize) -> Tensor<3> {
        self.layer_view(layer, true)
    }

    /// Values of `layer`, `[kv_heads, len, head_dim]`.
    pub fn values(&self, layer: usize) -> Tensor<3> {
        self.layer_view(layer, false)
    }
}
