//! The key/value cache: preallocated once per session for every layer, written in place, with
//! bounds-checked `rollback_to`, `reset` and `keep` (compaction of an accepted tree path).
//!
//! On flex (f32) the cache lives in host memory and attention runs on the multi-threaded CPU
//! kernel ([`crate::attention_cpu`]); elsewhere it is a device tensor per layer.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::config::ModelConfig;
use crate::error::{InferError, Result};

enum Storage {
    /// `[kv_heads, capacity, head_dim]` per layer (an `Option` so it can be moved out and
    /// updated in place while uniquely owned).
    Device {
        keys: Vec<Option<Tensor<3>>>,
        values: Vec<Option<Tensor<3>>>,
    },
    /// `[kv_heads][capacity][head_dim]` per layer.
    Host {
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
        device: Device,
    },
}

/// Keys and values of every layer, filled up to `len`.
pub struct KvCache {
    storage: Storage,
    len: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// Allocates a cache of `capacity` positions for every layer of `config`, in host memory
    /// when `host` (the CPU kernel path; f32 only), else on `device` as `dtype`.
    pub fn new(
        config: &ModelConfig,
        capacity: usize,
        device: &Device,
        dtype: DType,
        host: bool,
    ) -> Self {
        let (h, d) = (config.num_kv_heads, config.head_dim);
        let storage = if host {
            let make = || {
                (0..config.num_layers)
                    .map(|_| vec![0f32; h * capacity * d])
                    .collect()
            };
            Storage::Host {
                keys: make(),
                values: make(),
                device: device.clone(),
            }
        } else {
            let make = || {
                (0..config.num_layers)
                    .map(|_| Some(Tensor::zeros([h, capacity, d], (device, dtype))))
                    .collect()
            };
            Storage::Device {
                keys: make(),
                values: make(),
            }
        };
        Self {
            storage,
            len: 0,
            capacity,
            kv_heads: h,
            head_dim: d,
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

    /// Whether the cache is in host memory (the CPU attention kernel path).
    pub fn is_host(&self) -> bool {
        matches!(self.storage, Storage::Host { .. })
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

    /// Device storage: writes `[kv_heads, q, head_dim]` keys and values at positions
    /// `len..len+q` of `layer` and returns views of positions `0..len+q`. The length is advanced
    /// by [`KvCache::commit`].
    pub(crate) fn write_and_view(
        &mut self,
        layer: usize,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let Storage::Device { keys, values } = &mut self.storage else {
            unreachable!("write_and_view is only called on device caches");
        };
        let [h, q, d] = k.dims();
        let range = [0..h, self.len..self.len + q, 0..d];
        let kt = keys[layer]
            .take()
            .expect("cache slot present")
            .slice_assign(range.clone(), k);
        let vt = values[layer]
            .take()
            .expect("cache slot present")
            .slice_assign(range, v);
        let total = self.len + q;
        let kv = (
            kt.clone().narrow(1, 0, total),
            vt.clone().narrow(1, 0, total),
        );
        keys[layer] = Some(kt);
        values[layer] = Some(vt);
        kv
    }

    /// Host storage: writes `q` new rows given as `[q, kv_heads·head_dim]` at positions
    /// `len..len+q` of `layer`, and returns the layer's whole key and value buffers.
    pub(crate) fn host_write(
        &mut self,
        layer: usize,
        k: &[f32],
        v: &[f32],
        q: usize,
    ) -> (&[f32], &[f32]) {
        let Storage::Host { keys, values, .. } = &mut self.storage else {
            unreachable!("host_write is only called on host caches");
        };
        let (h, d, cap, len) = (self.kv_heads, self.head_dim, self.capacity, self.len);
        for (dst, src) in [(&mut keys[layer], k), (&mut values[layer], v)] {
            for i in 0..q {
                for head in 0..h {
                    let to = (head * cap + len + i) * d;
                    dst[to..to + d].copy_from_slice(&src[(i * h + head) * d..][..d]);
                }
            }
        }
        (&keys[layer], &values[layer])
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
        let (cap, d) = (self.capacity, self.head_dim);
        match &mut self.storage {
            Storage::Host { keys, values, .. } => {
                // Ascending sources ≥ their destinations: a forward copy never overwrites a
                // source still to be read.
                for buf in keys.iter_mut().chain(values.iter_mut()) {
                    for head in 0..self.kv_heads {
                        for (j, &src) in indices.iter().enumerate() {
                            let (from, to) = ((head * cap + src) * d, (head * cap + start + j) * d);
                            buf.copy_within(from..from + d, to);
                        }
                    }
                }
            }
            Storage::Device { keys, values } => {
                let device = keys[0].as_ref().expect("cache slot present").device();
                let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
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
        match &self.storage {
            Storage::Device { keys, values } => {
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
            Storage::Host {
                keys,
                values,
                device,
            } => {
                let buf = if pick_keys {
                    &keys[layer]
                } else {
                    &values[layer]
                };
                let (h, d) = (self.kv_heads, self.head_dim);
                let mut out = Vec::with_capacity(h * self.len * d);
                for head in 0..h {
                    out.extend_from_slice(&buf[head * self.capacity * d..][..self.len * d]);
                }
                Tensor::from_data(TensorData::new(out, [h, self.len, d]), device)
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
