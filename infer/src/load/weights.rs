//! Reading Hugging Face safetensors checkpoints (single file or sharded with
//! `model.safetensors.index.json`), memory-mapped, with a record of which tensors were used so the
//! loader can prove nothing is missing and nothing is left over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::error::{InferError, Result};
use crate::host::quant::BlockFormat;

/// Memory-mapped safetensors shards of one checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<(PathBuf, Mmap)>,
    /// tensor name → shard index
    index: BTreeMap<String, usize>,
    used: BTreeSet<String>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| InferError::io(&index_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| InferError::Safetensors {
                    path: index_path.clone(),
                    reason: format!("the shard index is not valid JSON ({e})"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| InferError::Safetensors {
                    path: index_path.clone(),
                    reason: "the shard index has no `weight_map`".into(),
                })?;
            let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.into_iter().map(|f| dir.join(f)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(InferError::io(
                    &single,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no model.safetensors or model.safetensors.index.json",
                    ),
                ));
            }
            vec![single]
        };
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let file = std::fs::File::open(&path).map_err(|e| InferError::io(&path, e))?;
            // SAFETY: the checkpoint is treated as read-only for the life of the map.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| InferError::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| InferError::Safetensors {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), shards.len());
            }
            shards.push((path, mmap));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            index,
            used: BTreeSet::new(),
        })
    }

    /// Opens one safetensors file (e.g. a standalone heads file).
    pub fn open_file(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| InferError::io(path, e))?;
        // SAFETY: the file is treated as read-only for the life of the map.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| InferError::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| InferError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let index = st.names().into_iter().map(|n| (n.to_string(), 0)).collect();
        Ok(Self {
            dir: path.to_path_buf(),
            shards: vec![(path.to_path_buf(), mmap)],
            index,
            used: BTreeSet::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names in the checkpoint.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// `name`'s view, checked to exist with shape `expected`.
    fn view(&self, name: &str, expected: &[usize]) -> Result<safetensors::tensor::TensorView<'_>> {
        let shard = *self
            .index
            .get(name)
            .ok_or_else(|| InferError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let (path, mmap) = &self.shards[shard];
        let st = SafeTensors::deserialize(mmap).map_err(|e| InferError::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let view = st.tensor(name).map_err(|e| InferError::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if view.shape() != expected {
            return Err(InferError::TensorShape {
                dir: self.dir.clone(),
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(view)
    }

    /// Checks that `name` exists with shape `expected` and marks it used, without reading it
    /// (for a matrix taken from the blocks file instead).
    pub fn check_shape(&mut self, name: &str, expected: &[usize]) -> Result<()> {
        self.view(name, expected)?;
        self.used.insert(name.to_string());
        Ok(())
    }

    /// Reads tensor `name` as f32 values, checking its shape is `expected`.
    pub fn read_f32(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        self.read_as::<f32>(name, expected)
    }

    /// Tensor `name`'s raw little-endian bf16 bytes when the checkpoint stores it as bf16
    /// (`None` for any other dtype), checking its shape is `expected`.
    pub fn read_bf16_bytes(&mut self, name: &str, expected: &[usize]) -> Result<Option<Vec<u8>>> {
        let view = self.view(name, expected)?;
        if view.dtype() != safetensors::Dtype::BF16 {
            return Ok(None);
        }
        let data = view.data();
        let bytes = data.to_vec();
        self.release(name, data);
        self.used.insert(name.to_string());
        Ok(Some(bytes))
    }

    /// Hands the pages of a tensor just converted back to the OS, so that loading a large
    /// checkpoint does not keep the whole file resident beside the converted (or quantised)
    /// weights. Best effort: a failed advice only costs memory.
    fn release(&self, name: &str, data: &[u8]) {
        #[cfg(unix)]
        if let Some(&shard) = self.index.get(name) {
            let mmap = &self.shards[shard].1;
            let offset = data.as_ptr() as usize - mmap.as_ptr() as usize;
            // SAFETY: the map is read-only and private to this checkpoint; after MADV_DONTNEED
            // its pages read back from the file unchanged, and no reference into this range is
            // used again here (the values were copied out above).
            let _ = unsafe {
                mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, data.len())
            };
        }
    }

    /// Reads tensor `name` onto `device` as `dtype`. A 16-bit target is built straight from the
    /// stored values (bf16 → bf16 and f16 → f16 as the bytes are; other pairs converted element by
    /// element), with no f32 copy of the tensor on the host: a 7B bf16 checkpoint would otherwise
    /// stage ~2 GB more per shard's worth of matrices on the way to a GPU.
    pub fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor<D>> {
        let data = match dtype {
            DType::BF16 => TensorData::new(self.read_as::<half::bf16>(name, &shape)?, shape),
            DType::F16 => TensorData::new(self.read_as::<half::f16>(name, &shape)?, shape),
            _ => TensorData::new(self.read_f32(name, &shape)?, shape),
        };
        // The data's own dtype: `from_data` with only a device would convert it to the device's
        // default float type on the host first.
        let own = data.dtype();
        let t = Tensor::<D>::from_data(data, (device, own));
        Ok(if own == dtype { t } else { t.cast(dtype) })
    }

    /// Reads tensor `name` as `T` (f32, bf16 or f16) without an intermediate copy: the stored
    /// values when the checkpoint holds `T`, else each value converted.
    fn read_as<T: Stored>(&mut self, name: &str, expected: &[usize]) -> Result<Vec<T>> {
        let view = self.view(name, expected)?;
        let data = view.data();
        let values = match view.dtype() {
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| T::from_bf16(half::bf16::from_le_bytes([b[0], b[1]])))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| T::from_f16(half::f16::from_le_bytes([b[0], b[1]])))
                .collect(),
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| T::from_f32(f32::from_le_bytes(b.try_into().unwrap())))
                .collect(),
            other => {
                return Err(InferError::TensorDtype {
                    dir: self.dir.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        self.release(name, data);
        self.used.insert(name.to_string());
        Ok(values)
    }

    /// Names never read, except those `ignore` accepts.
    pub fn unused(&self, ignore: impl Fn(&str) -> bool) -> Vec<String> {
        self.index
            .keys()
            .filter(|n| !self.used.contains(*n) && !ignore(n))
            .cloned()
            .collect()
    }
}

/// Writes f32 tensors `(name, shape, values)` as one safetensors file, atomically: a temporary
/// file renamed into place, so an interrupted write never leaves a half-written file behind.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
            .map_err(|e| InferError::Safetensors {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            })?;
        views.push((name.clone(), view));
    }
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("partial");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| {
        InferError::Safetensors {
            path: tmp.clone(),
            reason: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))
}

/// The file beside `model.safetensors` holding a GGUF-sourced checkpoint's quantised matrices as
/// their own blocks (written by the converter; read by the CPU fast path with `--weights auto`).
pub const BLOCKS_FILE: &str = "model.blocks.safetensors";

/// One matrix of GGUF blocks: `rows` rows of `cols / 32` blocks each, rows in HF order.
#[derive(Debug, Clone)]
pub struct BlockTensor {
    pub name: String,
    pub format: BlockFormat,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
}

/// Writes block matrices as `u8 [rows, bytes per row]` tensors; the metadata names each one's
/// format and row length (`name` → `q4_1:576`). Atomic, as [`write_f32_safetensors`].
pub fn write_block_safetensors(path: &Path, tensors: &[BlockTensor]) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    let mut metadata = std::collections::HashMap::new();
    for t in tensors {
        let shape = vec![t.rows, t.bytes.len() / t.rows.max(1)];
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, shape, &t.bytes)
            .map_err(|e| InferError::Safetensors {
                path: path.to_path_buf(),
                reason: format!("tensor `{}`: {e}", t.name),
            })?;
        views.push((t.name.clone(), view));
        metadata.insert(t.name.clone(), format!("{}:{}", t.format.name(), t.cols));
    }
    let tmp = path.with_extension("partial");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| {
        InferError::Safetensors {
            path: tmp.clone(),
            reason: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))
}

/// A matrix's format and its rows of GGUF blocks.
pub type BlockRows<'a> = (BlockFormat, Vec<&'a [u8]>);

/// A checkpoint's [`BLOCKS_FILE`], memory-mapped.
pub struct Blocks {
    path: PathBuf,
    mmap: Mmap,
    /// name → (format, columns)
    formats: BTreeMap<String, (BlockFormat, usize)>,
}

impl Blocks {
    /// The blocks file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `dir`'s blocks file, `None` when it has none.
    pub fn open(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(BLOCKS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let file = std::fs::File::open(&path).map_err(|e| InferError::io(&path, e))?;
        // SAFETY: the checkpoint is treated as read-only for the life of the map.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| InferError::io(&path, e))?;
        let bad = |reason: String| InferError::Safetensors {
            path: path.clone(),
            reason,
        };
        let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| bad(e.to_string()))?;
        let mut formats = BTreeMap::new();
        for (name, value) in meta.metadata().iter().flatten() {
            let (f, cols) = value
                .split_once(':')
                .ok_or_else(|| bad(format!("`{name}`: `{value}` is not FORMAT:COLUMNS")))?;
            let format = match f {
                "q4_0" => BlockFormat::Q4_0,
                "q4_1" => BlockFormat::Q4_1,
                "q8_0" => BlockFormat::Q8_0,
                other => return Err(bad(format!("`{name}`: unknown block format `{other}`"))),
            };
            let cols: usize = cols
                .parse()
                .map_err(|_| bad(format!("`{name}`: `{cols}` is not a row length")))?;
            formats.insert(name.clone(), (format, cols));
        }
        Ok(Some(Self {
            path,
            mmap,
            formats,
        }))
    }

    /// The matrix `name` as `[expected rows, expected cols]` of blocks: its format and its rows,
    /// or `None` when the file does not hold it.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Option<BlockRows<'_>>> {
        let Some(&(format, c)) = self.formats.get(name) else {
            return Ok(None);
        };
        let bad = |reason: String| InferError::Safetensors {
            path: self.path.clone(),
            reason,
        };
        let st = SafeTensors::deserialize(&self.mmap).map_err(|e| bad(e.to_string()))?;
        let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        let row_bytes = cols / crate::host::quant::QBLOCK * format.block_bytes();
        if c != cols
            || !cols.is_multiple_of(crate::host::quant::QBLOCK)
            || view.dtype() != safetensors::Dtype::U8
            || view.shape() != [rows, row_bytes]
        {
            return Err(bad(format!(
                "`{name}` is {:?} {:?} of {c} columns, expected u8 [{rows}, {row_bytes}] of {cols}",
                view.dtype(),
                view.shape()
            )));
        }
        // The view borrows the map for as long as `self` lives.
        let data: &[u8] = view.data();
        let start = data.as_ptr() as usize - self.mmap.as_ptr() as usize;
        let data = &self.mmap[start..start + data.len()];
        Ok(Some((format, data.chunks_exact(row_bytes).collect())))
    }
}

/// The float types a checkpoint is read into ([`Checkpoint::read_f32`], and for the device
/// [`Checkpoint::tensor`]): the same type is taken bit for bit, another converted (bf16 ↔ f16
/// through f32, exactly as the f32 route would round it).
trait Stored: burn::tensor::Element {
    fn from_bf16(v: half::bf16) -> Self;
    fn from_f16(v: half::f16) -> Self;
    fn from_f32(v: f32) -> Self;
}

impl Stored for half::bf16 {
    fn from_bf16(v: half::bf16) -> Self {
        v
    }
    fn from_f16(v: half::f16) -> Self {
        half::bf16::from_f32(v.to_f32())
    }
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

impl Stored for half::f16 {
    fn from_bf16(v: half::bf16) -> Self {
        half::f16::from_f32(v.to_f32())
    }
    fn from_f16(v: half::f16) -> Self {
        v
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

impl Stored for f32 {
    fn from_bf16(v: half::bf16) -> Self {
        v.to_f32()
    }
    fn from_f16(v: half::f16) -> Self {
        v.to_f32()
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit target is read straight from the stored values, with the same result as the f32
    /// route (read as f32, cast on the device) for every stored dtype.
    #[test]
    fn sixteen_bit_tensors_load_without_f32_staging_and_equal_the_f32_route() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let values: Vec<f32> = (0..24)
            .map(|i| (i as f32 - 11.5) * 0.37e-2 + 1e-7 * i as f32)
            .collect();
        let bf: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let f32b: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("b", safetensors::Dtype::BF16, &bf),
            ("h", safetensors::Dtype::F16, &f16),
            ("f", safetensors::Dtype::F32, &f32b),
        ]
        .into_iter()
        .map(|(n, d, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(d, vec![4, 6], b).unwrap(),
            )
        })
        .collect::<Vec<_>>();
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let device = Device::flex();
        for target in [DType::BF16, DType::F16] {
            for name in ["b", "h", "f"] {
                let mut ckpt = Checkpoint::open_file(&path).unwrap();
                let direct = ckpt.tensor::<2>(name, [4, 6], &device, target).unwrap();
                assert_eq!(direct.dtype(), target);
                let mut ckpt = Checkpoint::open_file(&path).unwrap();
                let staged = Tensor::<2>::from_data(
                    TensorData::new(ckpt.read_f32(name, &[4, 6]).unwrap(), [4, 6]),
                    &device,
                )
                .cast(target);
                assert_eq!(
                    direct.into_data().as_bytes(),
                    staged.into_data().as_bytes(),
                    "{name} as {target:?}"
                );
            }
        }
    }
}
