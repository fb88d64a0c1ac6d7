//! The key/value cache: preallocated once per session for every layer, written in place, with
//! bounds-checked `rollback_to`, `reset` and `keep` (compaction of an accepted tree path).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{InferError, Result};
use crate::host::kv::HostKv;
use crate::tensor::to_host_f32;

use super::config::ModelConfig;

/// Where the keys and values live.
pub(crate) enum KvStore {
    /// Device tensors `[kv_heads, capacity, head_dim]` per layer (an `Option` so each can be moved
    /// out and updated in place while uniquely owned): the burn-ops path.
    Device {
        keys: Vec<Option<Tensor<3>>>,
        values: Vec<Option<Tensor<3>>>,
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
            let make = || {
                (0..layers)
                    .map(|_| Some(Tensor::zeros([h, capacity, d], (device, dtype))))
                    .collect()
            };
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
                for (layer, heads) in positions.iter().enumerate() {
                    // Rows of the cache seen as `[kv_heads × capacity, head_dim]`: one `select`
                    // of `kv_heads × n` whole rows (not an element-wise gather).
                    let [h, src_cap, _] = sk[layer].as_ref().expect("cache slot present").dims();
                    let idx: Vec<i64> = heads
                        .iter()
                        .enumerate()
                        .flat_map(|(hh, pos)| pos.iter().map(move |&p| (hh * src_cap + p) as i64))
                        .collect();
                    let idx =
                        Tensor::<1, Int>::from_data(TensorData::new(idx, [h * n]), &src.device);
                    for (dst, s) in [
                        (&mut keys[layer], &sk[layer]),
                        (&mut values[layer], &sv[layer]),
                    ] {
                        let st = s.as_ref().expect("cache slot present");
                        let d = st.dims()[2];
                        let picked: Tensor<3> = st
                            .clone()
                            .reshape([h * src_cap, d])
                            .select(0, idx.clone())
                            .reshape([h, n, d]);
                        let t = dst.take().expect("cache slot present");
                        *dst = Some(t.slice_assign([0..h, 0..n, 0..d], picked));
                    }
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
    /// device: one gather and one write per layer and tensor, however many positions and heads.
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
                for (dst, s) in keys.iter_mut().zip(sk).chain(values.iter_mut().zip(sv)) {
                    let st = s.as_ref().expect("cache slot present");
                    let [h, _, d] = st.dims();
                    let picked = st.clone().select(1, idx.clone());
                    let t = dst.take().expect("cache slot present");
                    *dst = Some(t.slice_assign([0..h, to..to + n, 0..d], picked));
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
                for (dst, s) in [
                    (&mut keys[layer], &sk[layer]),
                    (&mut values[layer], &sv[layer]),
                ] {
                    let st = s.as_ref().expect("cache slot present");
                    let d = st.dims()[2];
                    let piece = st.clone().slice([h..h + 1, from..from + 1, 0..d]);
                    let t = dst.take().expect("cache slot present");
                    *dst = Some(t.slice_assign([h..h + 1, to..to + 1, 0..d], piece));
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

    /// Writes `[kv_heads, q, head_dim]` keys and values at positions `len..len+q` of `layer` and
    /// returns views of positions `0..len+q`. The length is advanced by [`KvCache::commit`].
    pub(crate) fn write_and_view(
        &mut self,
        layer: usize,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let KvStore::Device { keys, values } = &mut self.store else {
            panic!("a device cache was expected (checked by forward)");
        };
        let [h, q, d] = k.dims();
        let range = [0..h, self.len..self.len + q, 0..d];
        let new_keys = keys[layer]
            .take()
            .expect("cache slot present")
            .slice_assign(range.clone(), k);
        let new_values = values[layer]
            .take()
            .expect("cache slot present")
            .slice_assign(range, v);
        let total = self.len + q;
        let kv = (
            new_keys.clone().narrow(1, 0, total),
            new_values.clone().narrow(1, 0, total),
        );
        keys[layer] = Some(new_keys);
        values[layer] = Some(new_values);
        kv
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
                // One gather per layer and tensor, batched over heads.
                let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
                for slot in keys.iter_mut().chain(values.iter_mut()) {
                    let t = slot.take().expect("cache slot present");
                    let [h, _, d] = t.dims();
                    let picked = t.clone().select(1, idx.clone());
                    *slot = Some(t.slice_assign([0..h, start..start + n, 0..d], picked));
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
                let t = if pick_keys {
                    &keys[layer]
                } else {
                    &values[layer]
                };
                t.as_ref()
                    .expect("cache slot present")
                    .clone()
                    .narrow(1, 0, self.len)
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
