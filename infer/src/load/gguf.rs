//! A bounds-checked reader for GGUF v2/v3 files (the llama.cpp container), with dequantisation of
//! the tensor types the embedded default model uses (Q8_0, Q4_0, Q4_1, F32, F16, BF16).
//!
//! Every length and count in the header is checked against the bytes that remain before anything is
//! allocated from it, so a truncated or hostile file is an error, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{InferError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The ggml element types this reader can dequantise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Bf16,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block)
    fn block(self) -> (u64, u64) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl GgufTensorInfo {
    /// Row-major array shape (reverse of the GGUF dims): `[ne0, ne1]` is `(ne1, ne0)`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn element_count(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// A parsed GGUF file held in memory.
pub struct GgufFile {
    path: PathBuf,
    bytes: Vec<u8>,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs {n} bytes at offset {} but the file has {}",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A count that must be satisfiable by the remaining bytes at `min_size` bytes per item.
    fn count(&mut self, min_size: usize, what: &str) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        let limit = (self.remaining() / min_size.max(1)) as u64;
        if n > limit {
            return Err(format!(
                "{what} count {n} exceeds what the remaining {} bytes can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.count(1, "string length")?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("string at offset {} is not UTF-8", self.pos - n))
    }
    fn value(&mut self, ty: u32, depth: u32) -> std::result::Result<GgufValue, String> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8()?),
            1 => GgufValue::I8(self.u8()? as i8),
            2 => GgufValue::U16(self.u16()?),
            3 => GgufValue::I16(self.u16()? as i16),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(self.u32()? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32()?)),
            7 => GgufValue::Bool(self.u8()? != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err("arrays nested too deeply".into());
                }
                let elem = self.u32()?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count(min, "array")?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    /// Reads and validates a GGUF file: header, metadata, tensor table and every tensor's extent.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| InferError::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF bytes; `path` only names the source in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let err = |reason: String| InferError::Gguf {
            path: path.to_path_buf(),
            reason,
        };
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        let magic = c.take(4).map_err(err)?;
        if magic != MAGIC {
            return Err(err("missing the GGUF magic bytes".into()));
        }
        let version = c.u32().map_err(err)?;
        if !(2..=3).contains(&version) {
            return Err(err(format!(
                "unsupported GGUF version {version} (2 and 3 are read)"
            )));
        }
        // A tensor entry takes at least 8 (name) + 4 + 8 + 4 + 8 bytes; a metadata entry at least 13.
        let n_tensors = c.count(32, "tensor").map_err(err)?;
        let n_kv = c.count(13, "metadata").map_err(err)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string().map_err(err)?;
            let ty = c.u32().map_err(err)?;
            let v = c
                .value(ty, 0)
                .map_err(|r| err(format!("metadata `{key}`: {r}")))?;
            metadata.insert(key, v);
        }
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string().map_err(err)?;
            let n_dims = c.u32().map_err(err)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(err(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64().map_err(err)?);
            }
            let ty = c.u32().map_err(err)?;
            let offset = c.u64().map_err(err)?;
            let ggml_type = GgmlType::from_id(ty)
                .ok_or_else(|| err(format!("tensor `{name}` has unsupported ggml type {ty}")))?;
            raw.push((name, dims, ggml_type, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(err(format!("alignment {alignment} is not a power of two")));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ggml_type, offset) in raw {
            let (block_elems, block_bytes) = ggml_type.block();
            let n = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| err(format!("tensor `{name}` has an invalid shape {dims:?}")))?;
            if dims[0] % block_elems != 0 {
                return Err(err(format!(
                    "tensor `{name}` row length {} is not a multiple of its block size {block_elems}",
                    dims[0]
                )));
            }
            let len = (n / block_elems)
                .checked_mul(block_bytes)
                .ok_or_else(|| err(format!("tensor `{name}` is too large")))?;
            let start = data_start
                .checked_add(offset)
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= bytes.len() as u64))
                .ok_or_else(|| {
                    err(format!(
                        "tensor `{name}` ({len} bytes at data offset {offset}) lies beyond the end of the file ({} bytes); the file is truncated",
                        bytes.len()
                    ))
                })?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                start: start as usize,
                len: len as usize,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Metadata value by key, or an error naming the key.
    pub fn meta(&self, key: &str) -> Result<&GgufValue> {
        self.metadata.get(key).ok_or_else(|| InferError::Gguf {
            path: self.path.clone(),
            reason: format!("metadata key `{key}` is missing"),
        })
    }

    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta(key)?.as_u64().ok_or_else(|| InferError::Gguf {
            path: self.path.clone(),
            reason: format!("metadata key `{key}` is not an integer"),
        })
    }

    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        self.meta(key)?.as_f64().ok_or_else(|| InferError::Gguf {
            path: self.path.clone(),
            reason: format!("metadata key `{key}` is not a number"),
        })
    }

    /// The tensor's bytes as stored (whole blocks, rows in GGUF order).
    pub fn raw(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.bytes[info.start..info.start + info.len]
    }

    /// The tensor's values as f32 in row-major order (shape [`GgufTensorInfo::shape`]).
    pub fn dequantize(&self, info: &GgufTensorInfo) -> Vec<f32> {
        dequantize(
            info.ggml_type,
            &self.bytes[info.start..info.start + info.len],
        )
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantises whole blocks of `ty` from `data` (whose length is a multiple of the block size).
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (block_elems, block_bytes) = ty.block();
    let n_blocks = data.len() / block_bytes as usize;
    let mut out = Vec::with_capacity(n_blocks * block_elems as usize);
    for blk in data.chunks_exact(block_bytes as usize) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes(blk.try_into().unwrap())),
            GgmlType::F16 => out.push(f16(blk)),
            GgmlType::Bf16 => out.push(half::bf16::from_le_bytes([blk[0], blk[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16(&blk[0..2]);
                out.extend(blk[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
            GgmlType::Q4_0 => {
                let d = f16(&blk[0..2]);
                let qs = &blk[2..18];
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0f) - 8.0)));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - 8.0)));
            }
            GgmlType::Q4_1 => {
                let d = f16(&blk[0..2]);
                let m = f16(&blk[2..4]);
                let qs = &blk[4..20];
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0f) + m));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    /// A minimal valid GGUF with one F32 tensor of shape [ne0=2, ne1=3].
    pub(crate) fn tiny_gguf() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        put_str(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        put_str(&mut b, "llama");
        put_str(&mut b, "t");
        b.extend(2u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..6 {
            b.extend((i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_a_minimal_file() {
        let g = GgufFile::parse(Path::new("t.gguf"), tiny_gguf()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(
            g.meta("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        let t = g.tensor("t").unwrap();
        assert_eq!(t.shape(), vec![3, 2]);
        assert_eq!(g.dequantize(t), vec![0., 1., 2., 3., 4., 5.]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = tiny_gguf();
        for cut in 0..full.len() {
            let r = GgufFile::parse(Path::new("t.gguf"), full[..cut].to_vec());
            assert!(r.is_err(), "a file cut at {cut} bytes parsed");
        }
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut b = tiny_gguf();
        // tensor count = u64::MAX
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = GgufFile::parse(Path::new("h.gguf"), b)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tensor count"), "{e}");
        let mut b = tiny_gguf();
        // first key length = huge
        b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(GgufFile::parse(Path::new("h.gguf"), b).is_err());
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut b = tiny_gguf();
        b[0] = b'X';
        let e = GgufFile::parse(Path::new("x.gguf"), b)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("magic"), "{e}");
    }

    #[test]
    fn q4_1_and_q8_0_blocks_dequantise_by_hand() {
        // Q4_1: d = 0.5, m = -1, nibbles: low = i % 16, high = 15 - i % 16
        let mut blk = Vec::new();
        blk.extend(half::f16::from_f32(0.5).to_le_bytes());
        blk.extend(half::f16::from_f32(-1.0).to_le_bytes());
        for i in 0..16u8 {
            blk.push(i | ((15 - i) << 4));
        }
        let v = dequantize(GgmlType::Q4_1, &blk);
        assert_eq!(v.len(), 32);
        for i in 0..16 {
            assert_eq!(v[i], 0.5 * i as f32 - 1.0);
            assert_eq!(v[16 + i], 0.5 * (15 - i) as f32 - 1.0);
        }
        let mut blk = Vec::new();
        blk.extend(half::f16::from_f32(0.25).to_le_bytes());
        for i in 0..32i8 {
            blk.push((i - 16) as u8);
        }
        let v = dequantize(GgmlType::Q8_0, &blk);
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, 0.25 * (i as f32 - 16.0));
        }
    }

    /// A richer valid GGUF: metadata of every kind (numbers, strings, a nested array) and three
    /// tensors (F32, Q8_0, Q4_1).
    fn rich_gguf() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend(3u64.to_le_bytes()); // tensors
        b.extend(4u64.to_le_bytes()); // metadata
        put_str(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        put_str(&mut b, "llama");
        put_str(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        put_str(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        for t in ["a", "bc", "<s>"] {
            put_str(&mut b, t);
        }
        put_str(&mut b, "nested");
        b.extend(9u32.to_le_bytes());
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(6u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(1.5f32.to_le_bytes());
        b.extend((-2.0f32).to_le_bytes());
        let tensors = [
            ("f", 0u32, 4u64, 16u64),
            ("q8", 8, 32, 34),
            ("q4", 3, 32, 20),
        ];
        let mut offset = 0u64;
        for (name, ty, ne0, bytes) in tensors {
            put_str(&mut b, name);
            b.extend(1u32.to_le_bytes());
            b.extend(ne0.to_le_bytes());
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset += bytes.next_multiple_of(32);
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for (_, _, _, bytes) in tensors {
            let start = b.len();
            b.extend((0..bytes).map(|i| (i * 7 % 251) as u8));
            b.resize(start + bytes.next_multiple_of(32) as usize, 0);
        }
        b
    }

    /// Thousands of mutated and random inputs: every one parses or is an error, never a panic,
    /// and every tensor of a file that parses dequantises. (Counts are bounded by the bytes left,
    /// so nothing is allocated from an untrusted length; `hostile_counts_do_not_allocate` checks
    /// the bound.)
    #[test]
    fn mutated_and_random_files_never_panic() {
        let base = rich_gguf();
        let g = GgufFile::parse(Path::new("r.gguf"), base.clone()).unwrap();
        assert_eq!(g.tensors.len(), 3);
        for t in &g.tensors {
            assert_eq!(g.dequantize(t).len(), t.element_count());
        }
        let mut rng = crate::sampling::SamplerRng::new(17);
        let mut parsed = 0;
        for i in 0..4000 {
            let mut b = base.clone();
            match i % 4 {
                // A few random bytes changed.
                0 | 1 => {
                    for _ in 0..1 + rng.next_u64() % 4 {
                        let at = (rng.next_u64() % b.len() as u64) as usize;
                        b[at] = rng.next_u64() as u8;
                    }
                }
                // A field-sized run overwritten with extreme values.
                2 => {
                    let at = (rng.next_u64() % (b.len() as u64 - 8)) as usize;
                    let v = [u64::MAX, 1 << 40, 0, u64::MAX / 2][rng.next_u64() as usize % 4];
                    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                // Random length, random content after a valid magic.
                _ => {
                    let n = (rng.next_u64() % 256) as usize;
                    b.truncate(4);
                    b.extend((0..n).map(|_| rng.next_u64() as u8));
                }
            }
            if let Ok(g) = GgufFile::parse(Path::new("m.gguf"), b) {
                parsed += 1;
                for t in &g.tensors {
                    assert_eq!(g.dequantize(t).len(), t.element_count());
                }
            }
        }
        // Some mutations land in tensor data and leave a valid file: the test saw both outcomes.
        assert!(parsed > 0 && parsed < 4000, "{parsed} of 4000 parsed");
    }
}
