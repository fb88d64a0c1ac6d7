//! The key/value cache: preallocated once per session for every layer, written in place, with
//! bounds-checked `rollback_to`, `reset` and `keep` (compaction of an accepted tree path).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::config::ModelConfig;
use crate::cpu::HostKv;
use crate::error::{InferError, Result};

/// Keys and values of every layer, filled up to `len`: device tensors `[kv_heads, capacity,
/// head_dim]` (an `Option` so each can be moved out and updated in place while uniquely owned),
/// or, on the CPU fast path, host memory in the kernel's panel layout ([`HostKv`]).
pub struct KvCache {
    keys: Vec<Option<Tensor<3>>>,
    values: Vec<Option<Tensor<3>>>,
    host: Option<HostKv>,
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
        let make = || {
            if host {
                Vec::new()
            } else {
                (0..layers)
                    .map(|_| Some(Tensor::zeros([h, capacity, d], (device, dtype))))
                    .collect()
            }
        };
        Self {
            keys: make(),
            values: make(),
            host: host.then(|| HostKv::new(layers, h, d, capacity)),
            device: device.clone(),
            len: 0,
            capacity,
        }
    }

    /// Whether the cache is in host memory (the CPU fast path).
    pub fn is_host(&self) -> bool {
        self.host.is_some()
    }

    pub(crate) fn host_mut(&mut self) -> &mut HostKv {
        self.host.as_mut().expect("a host cache")
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
        let [h, q, d] = k.dims();
        let range = [0..h, self.len..self.len + q, 0..d];
        let keys = self.keys[layer]
            .take()
            .expect("cache slot present")
            .slice_assign(range.clone(), k);
        let values = self.values[layer]
            .take()
            .expect("cache slot present")
            .slice_assign(range, v);
        let total = self.len + q;
        let kv = (
            keys.clone().narrow(1, 0, total),
            values.clone().narrow(1, 0, total),
        );
        self.keys[layer] = Some(keys);
        self.values[layer] = Some(values);
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
        if let Some(host) = &mut self.host {
            // Ascending sources at or after their destinations: moving in order never overwrites
            // a source still to be read.
            for (j, &src) in indices.iter().enumerate() {
                if src != start + j {
                    host.move_position(src, start + j);
                }
            }
            self.len = start + n;
            return Ok(());
        }
        let device = self.keys[0].as_ref().expect("cache slot present").device();
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
        for slot in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let t = slot.take().expect("cache slot present");
            let [h, _, d] = t.dims();
            let picked = t.clone().select(1, idx.clone());
            *slot = Some(t.slice_assign([0..h, start..start + n, 0..d], picked));
        }
        self.len = start + n;
        Ok(())
    }

    fn layer_view(&self, layer: usize, pick_keys: bool) -> Tensor<3> {
        if let Some(host) = &self.host {
            let data = host.unpack(layer, self.len, pick_keys);
            let shape = [host.kv_heads(), self.len, host.head_dim()];
            return Tensor::from_data(TensorData::new(data, shape), &self.device);
        }
        let t = if pick_keys {
            &self.keys[layer]
        } else {
            &self.values[layer]
        };
        t.as_ref()
            .expect("cache slot present")
            .clone()
            .narrow(1, 0, self.len)
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
