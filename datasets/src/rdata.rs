//! A reader for R's lazy-load databases (`Rdata.rdx` + `Rdata.rdb`), enough of R's XDR
//! serialisation format (versions 2 and 3) to read character vectors, without R.
//!
//! - `.rdx` is a gzip'd (or zlib'd after a 4-byte length) serialisation of a named list whose
//!   `variables` element maps each object name to an integer pair `(offset, length)` into `.rdb`.
//! - each `.rdb` record is a 4-byte big-endian uncompressed length, then a zlib stream of one
//!   serialised object.
//!
//! Format reference: R's `src/main/serialize.c` (the `X\n` XDR flavour).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{DatasetError, Result};

/// The R values this reader understands.
#[derive(Debug, Clone, PartialEq)]
pub enum RValue {
    Null,
    /// A character vector (`None` is `NA`).
    Strings(Vec<Option<String>>),
    Integers(Vec<i32>),
    Reals(Vec<f64>),
    Logicals(Vec<i32>),
    /// A generic vector (`list`) with its `names` attribute, if any.
    List(Vec<RValue>, Option<Vec<String>>),
    Symbol(String),
    /// A pairlist of `(tag, value)`.
    Pairs(Vec<(Option<String>, RValue)>),
}

impl RValue {
    /// The element named `name` of a named list.
    pub fn get(&self, name: &str) -> Option<&RValue> {
        match self {
            RValue::List(items, Some(names)) => {
                names.iter().position(|n| n == name).map(|i| &items[i])
            }
            RValue::Pairs(p) => p
                .iter()
                .find(|(t, _)| t.as_deref() == Some(name))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

const NILSXP: u32 = 0;
const SYMSXP: u32 = 1;
const LISTSXP: u32 = 2;
const CHARSXP: u32 = 9;
const LGLSXP: u32 = 10;
const INTSXP: u32 = 13;
const REALSXP: u32 = 14;
const STRSXP: u32 = 16;
const VECSXP: u32 = 19;
const REFSXP: u32 = 255;
const NILVALUE_SXP: u32 = 254;
const GLOBALENV_SXP: u32 = 253;
const UNBOUNDVALUE_SXP: u32 = 252;
const MISSINGARG_SXP: u32 = 251;
const BASENAMESPACE_SXP: u32 = 247;
const EMPTYENV_SXP: u32 = 242;
const BASEENV_SXP: u32 = 241;

struct Xdr<'a> {
    data: &'a [u8],
    pos: usize,
    /// The reference table (symbols; environments are not supported).
    refs: Vec<RValue>,
}

impl<'a> Xdr<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| DatasetError::Format("R serialisation is truncated".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn int(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    fn length(&mut self) -> Result<usize> {
        let n = self.int()?;
        let n = if n == -1 {
            let hi = self.int()? as u64;
            let lo = self.int()? as u32 as u64;
            (hi << 32) | lo
        } else if n < 0 {
            return Err(DatasetError::Format(format!(
                "negative R vector length {n}"
            )));
        } else {
            n as u64
        };
        // Every element takes at least one byte; anything longer than the input is corrupt.
        if n as usize > self.data.len() {
            return Err(DatasetError::Format(format!(
                "R vector length {n} exceeds the data"
            )));
        }
        Ok(n as usize)
    }

    fn header(&mut self) -> Result<()> {
        if self.bytes(2)? != b"X\n" {
            return Err(DatasetError::Format(
                "not an XDR R serialisation (expected \"X\\n\")".into(),
            ));
        }
        let version = self.int()?;
        self.int()?; // writer's R version
        self.int()?; // minimal reader version
        match version {
            2 => {}
            3 => {
                let n = self.length()?;
                self.bytes(n)?; // native encoding name
            }
            v => {
                return Err(DatasetError::Format(format!(
                    "R serialisation version {v} is not supported (2 or 3 are)"
                )));
            }
        }
        Ok(())
    }

    fn charsxp(&mut self) -> Result<Option<String>> {
        let n = self.int()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n)
            .map_err(|_| DatasetError::Format(format!("bad R string length {n}")))?;
        let b = self.bytes(n)?;
        Ok(Some(String::from_utf8_lossy(b).into_owned()))
    }

    fn item(&mut self, depth: usize) -> Result<RValue> {
        if depth > 256 {
            return Err(DatasetError::Format(
                "R serialisation nests too deeply".into(),
            ));
        }
        let flags = self.int()? as u32;
        let ty = flags & 0xff;
        let has_attr = flags & (1 << 9) != 0;
        let value = match ty {
            NILVALUE_SXP | NILSXP | EMPTYENV_SXP | BASEENV_SXP | GLOBALENV_SXP
            | UNBOUNDVALUE_SXP | MISSINGARG_SXP | BASENAMESPACE_SXP => return Ok(RValue::Null),
            REFSXP => {
                let mut idx = (flags >> 8) as usize;
                if idx == 0 {
                    idx = self.int()? as usize;
                }
                return self
                    .refs
                    .get(idx.wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| DatasetError::Format(format!("bad R reference {idx}")));
            }
            SYMSXP => {
                // The symbol's name is a CHARSXP item (with its own flags).
                self.int()?;
                let name = self.charsxp()?.unwrap_or_default();
                let v = RValue::Symbol(name);
                self.refs.push(v.clone());
                return Ok(v);
            }
            LISTSXP => {
                let mut pairs = Vec::new();
                let mut flags = flags;
                loop {
                    if flags & (1 << 9) != 0 {
                        self.item(depth + 1)?;
                    }
                    let tag = if flags & (1 << 10) != 0 {
                        match self.item(depth + 1)? {
                            RValue::Symbol(s) => Some(s),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    let car = self.item(depth + 1)?;
                    pairs.push((tag, car));
                    // The CDR is read inline to avoid recursing once per element.
                    flags = self.int()? as u32;
                    match flags & 0xff {
                        LISTSXP => continue,
                        NILVALUE_SXP | NILSXP => break,
                        t => {
                            return Err(DatasetError::Format(format!(
                                "unsupported pairlist tail of R type {t}"
                            )));
                        }
                    }
                }
                return Ok(RValue::Pairs(pairs));
            }
            CHARSXP => RValue::Strings(vec![self.charsxp()?]),
            LGLSXP | INTSXP => {
                let n = self.length()?;
                let v = (0..n).map(|_| self.int()).collect::<Result<Vec<_>>>()?;
                if ty == LGLSXP {
                    RValue::Logicals(v)
                } else {
                    RValue::Integers(v)
                }
            }
            REALSXP => {
                let n = self.length()?;
                let v = (0..n)
                    .map(|_| Ok(f64::from_be_bytes(self.bytes(8)?.try_into().unwrap())))
                    .collect::<Result<Vec<_>>>()?;
                RValue::Reals(v)
            }
            STRSXP => {
                let n = self.length()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    self.int()?; // each element's CHARSXP flags
                    v.push(self.charsxp()?);
                }
                RValue::Strings(v)
            }
            VECSXP => {
                let n = self.length()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.item(depth + 1)?);
                }
                RValue::List(v, None)
            }
            t => {
                return Err(DatasetError::Format(format!(
                    "R object type {t} is not supported by this reader"
                )));
            }
        };
        if has_attr {
            let attrs = self.item(depth + 1)?;
            if let (RValue::List(items, _), Some(RValue::Strings(names))) =
                (&value, attrs.get("names"))
            {
                let names = names
                    .iter()
                    .map(|n| n.clone().unwrap_or_default())
                    .collect();
                return Ok(RValue::List(items.clone(), Some(names)));
            }
        }
        Ok(value)
    }
}

/// Parses one XDR serialisation (`X\n` ...).
pub fn unserialize(data: &[u8]) -> Result<RValue> {
    let mut x = Xdr {
        data,
        pos: 0,
        refs: Vec::new(),
    };
    x.header()?;
    x.item(0)
}

fn inflate(r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    // Bounded: the corpus databases inflate to a few tens of MB.
    r.take(1 << 30)
        .read_to_end(&mut out)
        .map_err(|e| DatasetError::Format(format!("{what} does not decompress: {e}")))?;
    Ok(out)
}

/// An opened lazy-load database: the index, plus the records file.
pub struct LazyLoadDb {
    rdb: Vec<u8>,
    /// Object name → (offset, length) into `rdb`.
    index: BTreeMap<String, (usize, usize)>,
}

impl LazyLoadDb {
    /// Opens `<base>.rdx` and `<base>.rdb` (e.g. `.../data/Rdata`).
    pub fn open(base: &Path) -> Result<Self> {
        let rdx_path = base.with_extension("rdx");
        let rdb_path = base.with_extension("rdb");
        let rdx = std::fs::read(&rdx_path).map_err(|e| DatasetError::io(&rdx_path, e))?;
        let rdb = std::fs::read(&rdb_path).map_err(|e| DatasetError::io(&rdb_path, e))?;
        Self::from_bytes(&rdx, rdb)
    }

    /// Builds the database from the bytes of the two files.
    pub fn from_bytes(rdx: &[u8], rdb: Vec<u8>) -> Result<Self> {
        let raw = if rdx.starts_with(&[0x1f, 0x8b]) {
            inflate(flate2::read::GzDecoder::new(rdx), "the .rdx index")?
        } else if rdx.len() > 4 {
            inflate(flate2::read::ZlibDecoder::new(&rdx[4..]), "the .rdx index")?
        } else {
            return Err(DatasetError::Format("the .rdx index is empty".into()));
        };
        let index_value = unserialize(&raw)?;
        let vars = index_value.get("variables").ok_or_else(|| {
            DatasetError::Format("the .rdx index has no `variables` element".into())
        })?;
        let mut index = BTreeMap::new();
        if let RValue::List(items, Some(names)) = vars {
            for (name, item) in names.iter().zip(items) {
                match item {
                    RValue::Integers(v) if v.len() == 2 && v[0] >= 0 && v[1] >= 0 => {
                        index.insert(name.clone(), (v[0] as usize, v[1] as usize));
                    }
                    _ => {
                        return Err(DatasetError::Format(format!(
                            "the .rdx entry for `{name}` is not an (offset, length) pair"
                        )));
                    }
                }
            }
        } else {
            return Err(DatasetError::Format(
                "the .rdx `variables` element is not a named list".into(),
            ));
        }
        Ok(Self { rdb, index })
    }

    /// Names of the stored objects, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Reads one object.
    pub fn get(&self, name: &str) -> Result<RValue> {
        let &(off, len) = self
            .index
            .get(name)
            .ok_or_else(|| DatasetError::Format(format!("no object `{name}` in the database")))?;
        let rec = off
            .checked_add(len)
            .filter(|&e| e <= self.rdb.len() && len > 4)
            .map(|e| &self.rdb[off..e])
            .ok_or_else(|| {
                DatasetError::Format(format!("the record of `{name}` lies outside the .rdb file"))
            })?;
        let data = inflate(
            flate2::read::ZlibDecoder::new(&rec[4..]),
            &format!("record `{name}`"),
        )?;
        let expect = u32::from_be_bytes(rec[..4].try_into().unwrap()) as usize;
        if data.len() != expect {
            return Err(DatasetError::Format(format!(
                "record `{name}` inflates to {} bytes, its header says {expect}",
                data.len()
            )));
        }
        unserialize(&data)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal XDR writer for building test databases by hand.
    pub struct XdrWriter(pub Vec<u8>);

    impl XdrWriter {
        pub fn new(version: i32) -> Self {
            let mut w = XdrWriter(b"X\n".to_vec());
            w.int(version);
            w.int(0x040300);
            w.int(0x020300);
            if version == 3 {
                w.int(5);
                w.0.extend_from_slice(b"UTF-8");
            }
            w
        }
        pub fn int(&mut self, v: i32) {
            self.0.extend_from_slice(&v.to_be_bytes());
        }
        pub fn chars(&mut self, s: Option<&str>) {
            self.int(0x00040009);
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i32);
                    self.0.extend_from_slice(s.as_bytes());
                }
            }
        }
        pub fn strings(&mut self, v: &[Option<&str>]) {
            self.int(STRSXP as i32);
            self.int(v.len() as i32);
            for s in v {
                self.chars(*s);
            }
        }
        /// A named list of `(offset, length)` int pairs, as in `.rdx`'s `variables`.
        pub fn named_int_pairs(&mut self, entries: &[(&str, i32, i32)]) {
            self.int((VECSXP | (1 << 9)) as i32);
            self.int(entries.len() as i32);
            for (_, a, b) in entries {
                self.int(INTSXP as i32);
                self.int(2);
                self.int(*a);
                self.int(*b);
            }
            self.names_attr(&entries.iter().map(|e| e.0).collect::<Vec<_>>());
        }
        /// A pairlist `names = c(...)`, closing the attributes.
        pub fn names_attr(&mut self, names: &[&str]) {
            self.int((LISTSXP | (1 << 10)) as i32);
            self.int(SYMSXP as i32);
            self.chars(Some("names"));
            self.strings(&names.iter().map(|n| Some(*n)).collect::<Vec<_>>());
            self.int(NILVALUE_SXP as i32);
        }
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Builds `.rdx`/`.rdb` bytes holding the given character vectors.
    pub fn build_db(objects: &[(&str, Vec<Option<&str>>)], version: i32) -> (Vec<u8>, Vec<u8>) {
        let mut rdb = Vec::new();
        let mut entries = Vec::new();
        for (name, lines) in objects {
            let mut w = XdrWriter::new(version);
            w.strings(lines);
            let z = zlib(&w.0);
            entries.push((*name, rdb.len() as i32, (z.len() + 4) as i32));
            rdb.extend_from_slice(&(w.0.len() as u32).to_be_bytes());
            rdb.extend_from_slice(&z);
        }
        // Index: list(variables = <named pairs>, references = list(), compressed = TRUE)
        let mut w = XdrWriter::new(version);
        w.int((VECSXP | (1 << 9)) as i32);
        w.int(3);
        w.named_int_pairs(&entries);
        w.int(VECSXP as i32);
        w.int(0);
        w.int(LGLSXP as i32);
        w.int(1);
        w.int(1);
        w.names_attr(&["variables", "references", "compressed"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&w.0).unwrap();
        (gz.finish().unwrap(), rdb)
    }

    #[test]
    fn reads_character_vectors_from_a_hand_built_database() {
        for version in [2, 3] {
            let (rdx, rdb) = build_db(
                &[
                    (
                        "emma",
                        vec![Some("EMMA"), Some(""), None, Some("Emma Woodhouse, ")],
                    ),
                    ("persuasion", vec![Some("Sir Walter Elliot")]),
                ],
                version,
            );
            let db = LazyLoadDb::from_bytes(&rdx, rdb).unwrap();
            assert_eq!(db.names().collect::<Vec<_>>(), ["emma", "persuasion"]);
            assert_eq!(
                db.get("emma").unwrap(),
                RValue::Strings(vec![
                    Some("EMMA".into()),
                    Some("".into()),
                    None,
                    Some("Emma Woodhouse, ".into())
                ])
            );
            assert_eq!(
                db.get("persuasion").unwrap(),
                RValue::Strings(vec![Some("Sir Walter Elliot".into())])
            );
            assert!(db.get("sense").unwrap_err().to_string().contains("sense"));
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let (rdx, rdb) = build_db(&[("emma", vec![Some("EMMA")])], 3);
        // Truncated records file.
        let db = LazyLoadDb::from_bytes(&rdx, rdb[..rdb.len() / 2].to_vec()).unwrap();
        assert!(db.get("emma").is_err());
        // Garbage index.
        assert!(LazyLoadDb::from_bytes(b"garbage!", rdb.clone()).is_err());
        // Every truncation of a serialisation fails cleanly.
        let mut w = XdrWriter::new(3);
        w.strings(&[Some("abc"), Some("de")]);
        for cut in 0..w.0.len() {
            assert!(unserialize(&w.0[..cut]).is_err(), "cut at {cut}");
        }
        // A hostile length.
        let mut w = XdrWriter::new(2);
        w.int(STRSXP as i32);
        w.int(i32::MAX);
        assert!(unserialize(&w.0).is_err());
    }

    /// A small deterministic generator for the mutation tests (no dependency needed).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// Thousands of mutated serialisations, indexes and records: each reads or is an error,
    /// never a panic. Lengths in the data are checked against the bytes left before anything is
    /// allocated (`corrupt_input_is_an_error_not_a_panic` checks a hostile one directly).
    #[test]
    fn mutated_databases_never_panic() {
        let mut rng = Lcg(11);
        let mut w = XdrWriter::new(3);
        w.strings(&[
            Some("It is a truth"),
            None,
            Some(""),
            Some("universally acknowledged"),
        ]);
        let ser = w.0;
        let (rdx, rdb) = build_db(
            &[
                ("emma", vec![Some("EMMA"), Some("Emma Woodhouse")]),
                ("p", vec![None]),
            ],
            2,
        );
        let mutate = |rng: &mut Lcg, b: &mut Vec<u8>| match rng.next() % 3 {
            0 => {
                for _ in 0..1 + rng.next() % 3 {
                    let at = (rng.next() % b.len() as u64) as usize;
                    b[at] = rng.next() as u8;
                }
            }
            1 => {
                let at = (rng.next() % (b.len() as u64 - 4)) as usize;
                let v = [i32::MAX, -1, i32::MIN, 1 << 24][rng.next() as usize % 4];
                b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                let cut = (rng.next() % b.len() as u64) as usize;
                b.truncate(cut);
            }
        };
        let mut ok = 0;
        for _ in 0..3000 {
            let mut b = ser.clone();
            mutate(&mut rng, &mut b);
            ok += usize::from(unserialize(&b).is_ok());
        }
        assert!(ok < 3000, "every mutation parsed: the test mutates nothing");
        for _ in 0..1000 {
            let (mut x, mut r) = (rdx.clone(), rdb.clone());
            if rng.next().is_multiple_of(2) {
                mutate(&mut rng, &mut x);
            } else {
                mutate(&mut rng, &mut r);
            }
            if let Ok(db) = LazyLoadDb::from_bytes(&x, r) {
                let names: Vec<String> = db.names().map(String::from).collect();
                for n in names {
                    let _ = db.get(&n);
                }
            }
        }
    }
}
