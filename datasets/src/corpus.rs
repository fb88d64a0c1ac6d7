//! Corpora behind one interface: the offline Jane Austen corpus (Debian's `r-cran-janeaustenr`,
//! read without R), a directory of `.txt` files, a single text file, or JSONL with a `text` field.
//! Documents are tokenised with the base model's tokenizer, filtered by length and cut into
//! training sequences; one document can be held out for evaluation.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokenswift_infer::load::hub::home_dir;
use tokenswift_infer::load::tokenizer::TextTokenizer;

use crate::error::{DatasetError, Result};
use crate::rdata::{LazyLoadDb, RValue};

/// The six novels of the offline corpus, in the package's order.
pub const AUSTEN_NOVELS: [&str; 6] = [
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
];

/// The novel kept out of training; evaluation prompts and held-out accuracy come from it.
pub const HELD_OUT_NOVEL: &str = "persuasion";

const AUSTEN_PACKAGE: &str = "r-cran-janeaustenr";

/// One document of a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub name: String,
    pub text: String,
}

/// Where documents come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CorpusSource {
    /// Jane Austen's six novels (offline; fetched once with `apt-get download`).
    Austen,
    /// Every `.txt` file in a directory (one document each), sorted by name.
    Directory(PathBuf),
    /// One text file (one document).
    TextFile(PathBuf),
    /// JSON Lines with a `text` field (one document per line).
    Jsonl(PathBuf),
    /// A Parquet file with a `text` column (one document per row).
    Parquet(PathBuf),
    /// PG-19 through the Hugging Face hub (the copies of [`PG19_COPIES`], tried in order): the
    /// first `files` Parquet files of `split` (`train`, `validation` or `test`). Needs network
    /// access, or the local hub cache with `HF_HUB_OFFLINE=1`.
    Pg19 { split: String, files: usize },
}

impl CorpusSource {
    /// Parses `austen` or a path (directory, `.txt`, `.jsonl`).
    pub fn parse(spec: &str) -> Result<Self> {
        if spec.eq_ignore_ascii_case("austen") {
            return Ok(CorpusSource::Austen);
        }
        if let Some(rest) = spec.strip_prefix("pg19") {
            // pg19, pg19:test, pg19:train:3
            let mut parts = rest.split(':').filter(|p| !p.is_empty());
            let split = parts.next().unwrap_or("train").to_string();
            if !["train", "validation", "test"].contains(&split.as_str()) {
                return Err(DatasetError::Corpus(format!(
                    "unknown PG-19 split `{split}` (train, validation, test)"
                )));
            }
            let files = match parts.next() {
                Some(n) => n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    DatasetError::Corpus(format!(
                        "`{n}` is not a number of PG-19 files (e.g. pg19:train:2)"
                    ))
                })?,
                None => 1,
            };
            return Ok(CorpusSource::Pg19 { split, files });
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            Ok(CorpusSource::Directory(path))
        } else if path.is_file() {
            match path.extension().and_then(|e| e.to_str()) {
                Some("jsonl") | Some("json") => Ok(CorpusSource::Jsonl(path)),
                Some("parquet") => Ok(CorpusSource::Parquet(path)),
                _ => Ok(CorpusSource::TextFile(path)),
            }
        } else {
            Err(DatasetError::Corpus(format!(
                "corpus `{spec}` is neither `austen` nor an existing file or directory"
            )))
        }
    }

    /// The name of the held-out document of this corpus, if it has one.
    pub fn held_out(&self) -> Option<&'static str> {
        match self {
            CorpusSource::Austen => Some(HELD_OUT_NOVEL),
            _ => None,
        }
    }

    /// Reads every document.
    pub fn documents(&self, progress: &dyn Fn(&str)) -> Result<Vec<Document>> {
        match self {
            CorpusSource::Austen => austen_novels(progress),
            CorpusSource::Directory(dir) => directory_documents(dir),
            CorpusSource::TextFile(p) => Ok(vec![text_document(p)?]),
            CorpusSource::Jsonl(p) => jsonl_documents(p),
            CorpusSource::Parquet(p) => parquet_documents(p),
            CorpusSource::Pg19 { split, files } => pg19_documents(split, *files, progress),
        }
    }
}

/// Every `.txt` (one document), `.jsonl` and `.parquet` file (one document per line or row) of a
/// directory, in file-name order (PG-19's Parquet shards under any names). Documents of a
/// `.jsonl` or `.parquet` file are named `FILE-STEM/NAME`.
fn directory_documents(dir: &Path) -> Result<Vec<Document>> {
    let ext = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DatasetError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(ext(p).as_deref(), Some("txt" | "jsonl" | "parquet")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DatasetError::Corpus(format!(
            "directory {} has no .txt, .jsonl or .parquet files",
            dir.display()
        )));
    }
    let mut docs = Vec::new();
    for p in &files {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let named = |mut d: Vec<Document>| {
            for doc in &mut d {
                doc.name = format!("{stem}/{}", doc.name);
            }
            d
        };
        match ext(p).as_deref() {
            Some("txt") => docs.push(text_document(p)?),
            Some("jsonl") => docs.extend(named(jsonl_documents(p)?)),
            _ => docs.extend(named(parquet_documents(p)?)),
        }
    }
    Ok(docs)
}

fn text_document(path: &Path) -> Result<Document> {
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
    Ok(Document {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        text,
    })
}

fn jsonl_documents(path: &Path) -> Result<Vec<Document>> {
    let data = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
    let mut docs = Vec::new();
    for (i, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            DatasetError::Corpus(format!(
                "{} line {} is not JSON: {e}",
                path.display(),
                i + 1
            ))
        })?;
        let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
            DatasetError::Corpus(format!(
                "{} line {} has no string field `text`",
                path.display(),
                i + 1
            ))
        })?;
        docs.push(Document {
            name: format!("line{}", i + 1),
            text: text.to_string(),
        });
    }
    Ok(docs)
}

/// Documents from a Parquet file's `text` column (named by a `short_book_title` or `title`
/// column when there is one).
pub fn parquet_documents(path: &Path) -> Result<Vec<Document>> {
    use polars::prelude::*;
    let bad = |e: PolarsError| {
        DatasetError::Corpus(format!(
            "{} is not a readable Parquet file: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let df = ParquetReader::new(file).finish().map_err(bad)?;
    let text = df
        .column("text")
        .map_err(|_| DatasetError::Corpus(format!("{} has no `text` column", path.display())))?;
    let text = text.str().map_err(bad)?;
    let title = ["short_book_title", "title"]
        .iter()
        .find_map(|c| df.column(c).ok().and_then(|c| c.str().ok().cloned()));
    Ok(text
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            t.map(|t| Document {
                name: title
                    .as_ref()
                    .and_then(|c| c.get(i).map(String::from))
                    .unwrap_or_else(|| format!("row{i}")),
                text: t.to_string(),
            })
        })
        .collect())
}

/// Public copies of PG-19 on the hub, tried in this order: `(repository, revision)`.
///
/// - `emozilla/pg19`: Parquet shards on the main branch, `data/{split}-00000-of-000NN-<hash>.parquet`.
/// - `deepmind/pg19`: a loading-script repository with no Parquet on its main branch; the hub's own
///   conversion lives on the `refs/convert/parquet` revision as `default/{split}/0000.parquet`
///   (`default/partial-{split}/…` for a split too large to convert whole).
pub const PG19_COPIES: &[(&str, &str)] = &[
    ("emozilla/pg19", "main"),
    ("deepmind/pg19", "refs/convert/parquet"),
];

/// Whether `path` (a file of a PG-19 copy, relative to its root) holds `split` in one of the
/// layouts of [`PG19_COPIES`].
pub fn pg19_file_matches(path: &str, split: &str) -> bool {
    let mut parts = path.rsplit('/');
    let file = parts.next().unwrap_or("");
    let dir = parts.next().unwrap_or("");
    file.ends_with(".parquet")
        && (file.starts_with(&format!("{split}-"))
            || dir == split
            || dir == format!("partial-{split}"))
}

/// The Parquet files of `split` in the local hub cache's snapshots of `repo` (any revision),
/// sorted by their path in the repository.
fn cached_pg19_files(cache_root: &Path, repo: &str, split: &str) -> Vec<PathBuf> {
    let snapshots = cache_root
        .join(format!("datasets--{}", repo.replace('/', "--")))
        .join("snapshots");
    let mut found: std::collections::BTreeMap<String, PathBuf> = Default::default();
    let mut stack: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let roots = stack.clone();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(r) = std::fs::read_dir(&p) {
                stack.extend(r.filter_map(|e| e.ok().map(|e| e.path())));
            }
            continue;
        }
        let Some(rel) = roots
            .iter()
            .find_map(|r| p.strip_prefix(r).ok())
            .map(|r| r.to_string_lossy().replace('\\', "/"))
        else {
            continue;
        };
        if pg19_file_matches(&rel, split) {
            found.entry(rel).or_insert(p);
        }
    }
    found.into_values().collect()
}

/// PG-19 books of `split`: the first `files` Parquet files (sorted by name) of the first copy in
/// [`PG19_COPIES`] that has them, from the hub, or from the local hub cache with
/// `HF_HUB_OFFLINE=1`.
fn pg19_documents(split: &str, files: usize, progress: &dyn Fn(&str)) -> Result<Vec<Document>> {
    let copies = PG19_COPIES
        .iter()
        .map(|(r, rev)| format!("{r}@{rev}"))
        .collect::<Vec<_>>()
        .join(", ");
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let paths: Vec<PathBuf> = if offline {
        let cache = hf_hub::Cache::from_env();
        let found = PG19_COPIES
            .iter()
            .map(|(repo, _)| cached_pg19_files(cache.path(), repo, split))
            .find(|f| !f.is_empty());
        match found {
            Some(f) => f.into_iter().take(files).collect(),
            None => {
                return Err(DatasetError::Unavailable(format!(
                    "HF_HUB_OFFLINE is set and the local hub cache ({}) holds no PG-19 Parquet file of split `{split}` from {copies}; pass --data DIR with a directory of PG-19 Parquet files, or --data austen",
                    cache.path().display()
                )));
            }
        }
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| DatasetError::Unavailable(format!("cannot reach the Hugging Face hub ({e}); pass --data DIR with a directory of PG-19 Parquet files, or --data austen")))?;
        let mut tried = Vec::new();
        let mut chosen = None;
        for (id, rev) in PG19_COPIES {
            progress(&format!(
                "listing {id}@{rev} ({split}) on the Hugging Face hub"
            ));
            let repo = api.repo(hf_hub::Repo::with_revision(
                id.to_string(),
                hf_hub::RepoType::Dataset,
                rev.to_string(),
            ));
            match repo.info() {
                Ok(info) => {
                    let mut names: Vec<String> = info
                        .siblings
                        .into_iter()
                        .map(|s| s.rfilename)
                        .filter(|n| pg19_file_matches(n, split))
                        .collect();
                    names.sort();
                    if names.is_empty() {
                        tried.push(format!("{id}@{rev}: no Parquet file of split `{split}`"));
                    } else {
                        chosen = Some((repo, names));
                        break;
                    }
                }
                Err(e) => tried.push(format!("{id}@{rev}: {e}")),
            }
        }
        let Some((repo, names)) = chosen else {
            return Err(DatasetError::Unavailable(format!(
                "no PG-19 copy on the Hugging Face hub could be listed ({}); pass --data DIR with a directory of PG-19 Parquet files, or --data austen",
                tried.join("; ")
            )));
        };
        names
            .iter()
            .take(files)
            .map(|n| {
                progress(&format!("downloading {n}"));
                repo.get(n).map_err(|e| {
                    DatasetError::Unavailable(format!("cannot download PG-19 file {n} ({e})"))
                })
            })
            .collect::<Result<_>>()?
    };
    let mut docs = Vec::new();
    for p in paths {
        docs.extend(parquet_documents(&p)?);
    }
    Ok(docs)
}

/// The lazy-load database of the Austen package (`.../data/Rdata`), fetched and unpacked once
/// into `$TOKENSWIFT_HOME/datasets/janeaustenr/`.
pub fn ensure_austen(progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let dir = home_dir().join("datasets").join("janeaustenr");
    let base = dir.join("Rdata");
    let ready = |b: &Path| b.with_extension("rdx").exists() && b.with_extension("rdb").exists();
    if ready(&base) {
        return Ok(base);
    }
    std::fs::create_dir_all(&dir).map_err(|e| DatasetError::io(&dir, e))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| DatasetError::io(&lock_path, e))?;
    lock.lock().map_err(|e| DatasetError::io(&lock_path, e))?;
    if ready(&base) {
        return Ok(base);
    }
    progress(&format!(
        "fetching the offline corpus: apt-get download {AUSTEN_PACKAGE}"
    ));
    let work = dir.join("download.partial");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| DatasetError::io(&work, e))?;
    }
    std::fs::create_dir_all(&work).map_err(|e| DatasetError::io(&work, e))?;
    let out = Command::new("apt-get")
        .args(["download", AUSTEN_PACKAGE])
        .current_dir(&work)
        .output()
        .map_err(|e| {
            DatasetError::Unavailable(format!(
                "cannot run apt-get to fetch the offline corpus ({e}); on a non-Debian system pass --data with a directory of .txt files"
            ))
        })?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| DatasetError::io(&work, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().and_then(|e| e.to_str()) == Some("deb"));
    let Some(deb) = deb else {
        return Err(DatasetError::Unavailable(format!(
            "apt-get download {AUSTEN_PACKAGE} produced no package: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    };
    let unpacked = work.join("x");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .map_err(|e| DatasetError::Unavailable(format!("cannot run dpkg-deb: {e}")))?;
    if !status.success() {
        return Err(DatasetError::Unavailable(format!(
            "dpkg-deb could not unpack {}",
            deb.display()
        )));
    }
    let src = unpacked.join("usr/lib/R/site-library/janeaustenr/data/Rdata");
    if !ready(&src) {
        return Err(DatasetError::Unavailable(format!(
            "{} does not contain data/Rdata.rdx and .rdb",
            deb.display()
        )));
    }
    for ext in ["rdb", "rdx"] {
        let to = base.with_extension(ext);
        let tmp = base.with_extension(format!("{ext}.partial"));
        std::fs::copy(src.with_extension(ext), &tmp).map_err(|e| DatasetError::io(&tmp, e))?;
        std::fs::rename(&tmp, &to).map_err(|e| DatasetError::io(&to, e))?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(base)
}

/// Joins a character vector of lines into one text (NA lines are dropped).
pub fn lines_to_text(value: &RValue) -> Result<String> {
    match value {
        RValue::Strings(lines) => Ok(lines
            .iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")),
        _ => Err(DatasetError::Format(
            "expected a character vector of lines".into(),
        )),
    }
}

/// The six novels, read from the package's lazy-load database.
pub fn austen_novels(progress: &dyn Fn(&str)) -> Result<Vec<Document>> {
    let base = ensure_austen(progress)?;
    let db = LazyLoadDb::open(&base)?;
    AUSTEN_NOVELS
        .iter()
        .map(|name| {
            Ok(Document {
                name: name.to_string(),
                text: lines_to_text(&db.get(name)?)?,
            })
        })
        .collect()
}

/// A tokenised document.
#[derive(Debug, Clone)]
pub struct TokenizedDocument {
    pub name: String,
    pub tokens: Vec<u32>,
}

/// Tokenises documents with the base model's tokenizer.
pub fn tokenize(docs: &[Document], tokenizer: &TextTokenizer) -> Result<Vec<TokenizedDocument>> {
    docs.iter()
        .map(|d| {
            Ok(TokenizedDocument {
                name: d.name.clone(),
                tokens: tokenizer.encode(&d.text)?,
            })
        })
        .collect()
}

/// Training sequences: documents with at least `min_tokens` tokens (the paper keeps books of
/// ≥ 8K tokens), each cut into consecutive non-overlapping windows of `seq_len` tokens (a shorter
/// tail is dropped). Errors, naming what was found, when no document is long enough.
pub fn training_sequences(
    docs: &[TokenizedDocument],
    seq_len: usize,
    min_tokens: usize,
) -> Result<Vec<Vec<u32>>> {
    training_windows(docs, seq_len, min_tokens, Windows::All)
}

/// Which windows of a long document become training sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    /// Every consecutive window.
    All,
    /// Only the first window of each document (the paper: the first 8K tokens of each book).
    First,
}

/// [`training_sequences`] with a choice of windows.
pub fn training_windows(
    docs: &[TokenizedDocument],
    seq_len: usize,
    min_tokens: usize,
    windows: Windows,
) -> Result<Vec<Vec<u32>>> {
    if seq_len < 3 {
        return Err(DatasetError::Corpus(format!(
            "sequence length {seq_len} is too short (at least 3 tokens: one position and two targets)"
        )));
    }
    let need = min_tokens.max(seq_len);
    let long: Vec<&TokenizedDocument> = docs.iter().filter(|d| d.tokens.len() >= need).collect();
    if long.is_empty() {
        let longest = docs.iter().map(|d| d.tokens.len()).max().unwrap_or(0);
        return Err(DatasetError::Corpus(format!(
            "no document is long enough: {} document(s) found, the longest has {longest} tokens, at least {need} are needed (lower --seq-len or --min-doc-tokens)",
            docs.len()
        )));
    }
    let per_doc = match windows {
        Windows::All => usize::MAX,
        Windows::First => 1,
    };
    Ok(long
        .iter()
        .flat_map(|d| {
            d.tokens
                .chunks_exact(seq_len)
                .take(per_doc)
                .map(|c| c.to_vec())
        })
        .collect())
}

/// Which documents are trained on and which are only evaluated on: the two sets never share a
/// document (or, for a one-document corpus, a token position).
#[derive(Debug, Clone)]
pub struct HeldOutSplit {
    pub train: Vec<TokenizedDocument>,
    pub held_out: Vec<TokenizedDocument>,
}

impl HeldOutSplit {
    /// The held-out documents' names (recorded in `heads.json`).
    pub fn held_out_names(&self) -> Vec<String> {
        self.held_out.iter().map(|d| d.name.clone()).collect()
    }
}

/// Splits a corpus into training and held-out documents. `named` (Austen: *Persuasion*) is held
/// out by name; otherwise the last document is. A corpus of one document keeps its last
/// `tail_tokens` tokens (at most half of it) apart as `NAME[tail]` and trains on the rest,
/// `NAME[head]`.
pub fn split_held_out(
    docs: Vec<TokenizedDocument>,
    named: Option<&str>,
    tail_tokens: usize,
) -> Result<HeldOutSplit> {
    if let Some(name) = named {
        let (held_out, train): (Vec<_>, Vec<_>) = docs.into_iter().partition(|d| d.name == name);
        if held_out.is_empty() {
            return Err(DatasetError::Corpus(format!(
                "the held-out document `{name}` is not in the corpus"
            )));
        }
        return Ok(HeldOutSplit { train, held_out });
    }
    let mut docs = docs;
    match docs.len() {
        0 => Err(DatasetError::Corpus("the corpus has no documents".into())),
        1 => {
            let d = docs.pop().expect("one document");
            let cut = d.tokens.len() - tail_tokens.min(d.tokens.len() / 2);
            Ok(HeldOutSplit {
                train: vec![TokenizedDocument {
                    name: format!("{}[head]", d.name),
                    tokens: d.tokens[..cut].to_vec(),
                }],
                held_out: vec![TokenizedDocument {
                    name: format!("{}[tail]", d.name),
                    tokens: d.tokens[cut..].to_vec(),
                }],
            })
        }
        _ => {
            let last = docs.pop().expect("two documents");
            Ok(HeldOutSplit {
                train: docs,
                held_out: vec![last],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, n: usize) -> TokenizedDocument {
        TokenizedDocument {
            name: name.into(),
            tokens: (0..n as u32).collect(),
        }
    }

    #[test]
    fn sequences_are_cut_from_long_documents_only() {
        let docs = [doc("short", 5), doc("long", 23)];
        let seqs = training_sequences(&docs, 10, 8).unwrap();
        assert_eq!(
            seqs,
            vec![(0..10).collect::<Vec<u32>>(), (10..20).collect()]
        );
    }

    #[test]
    fn first_windows_take_one_window_per_long_document() {
        let docs = [doc("short", 5), doc("long", 23), doc("longer", 30)];
        let seqs = training_windows(&docs, 10, 8, Windows::First).unwrap();
        assert_eq!(seqs, vec![(0..10).collect::<Vec<u32>>(), (0..10).collect()]);
        assert_eq!(
            training_windows(&docs, 10, 8, Windows::All).unwrap().len(),
            5
        );
    }

    #[test]
    fn too_short_corpus_names_what_was_found() {
        let docs = [doc("a", 5), doc("b", 7)];
        let e = training_sequences(&docs, 10, 8).unwrap_err().to_string();
        assert!(
            e.contains("2 document(s)") && e.contains("7 tokens") && e.contains("10"),
            "{e}"
        );
    }

    #[test]
    fn local_corpora_parse_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "second").unwrap();
        std::fs::write(dir.path().join("a.txt"), "first").unwrap();
        let src = CorpusSource::parse(dir.path().to_str().unwrap()).unwrap();
        let docs = src.documents(&|_| {}).unwrap();
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );

        let jl = dir.path().join("c.jsonl");
        std::fs::write(&jl, "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n").unwrap();
        let docs = CorpusSource::parse(jl.to_str().unwrap())
            .unwrap()
            .documents(&|_| {})
            .unwrap();
        assert_eq!(docs.len(), 2);
        std::fs::write(&jl, "{\"body\": \"one\"}\n").unwrap();
        let e = CorpusSource::parse(jl.to_str().unwrap())
            .unwrap()
            .documents(&|_| {})
            .unwrap_err();
        assert!(
            e.to_string().contains("line 1 has no string field `text`"),
            "{e}"
        );

        let e = CorpusSource::parse("/no/such/corpus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/corpus"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = CorpusSource::parse(empty.path().to_str().unwrap())
            .unwrap()
            .documents(&|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("no .txt, .jsonl or .parquet files"), "{e}");
    }

    #[test]
    fn the_held_out_documents_are_never_training_documents() {
        // Named (Austen), last document, and one document split at its tail.
        let docs = vec![doc("a", 50), doc("persuasion", 40), doc("c", 30)];
        let s = split_held_out(docs.clone(), Some("persuasion"), 16).unwrap();
        assert_eq!(s.held_out_names(), ["persuasion"]);
        assert!(s.train.iter().all(|d| d.name != "persuasion"));
        assert_eq!(s.train.len(), 2);
        let s = split_held_out(docs.clone(), None, 16).unwrap();
        assert_eq!(s.held_out_names(), ["c"]);
        assert_eq!(
            s.train.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["a", "persuasion"]
        );
        let s = split_held_out(vec![doc("book", 100)], None, 16).unwrap();
        assert_eq!(s.held_out_names(), ["book[tail]"]);
        assert_eq!(s.train[0].tokens, (0..84).collect::<Vec<u32>>());
        assert_eq!(s.held_out[0].tokens, (84..100).collect::<Vec<u32>>());
        let s = split_held_out(vec![doc("small", 10)], None, 16).unwrap();
        assert_eq!(
            (s.train[0].tokens.len(), s.held_out[0].tokens.len()),
            (5, 5)
        );
        assert!(split_held_out(docs, Some("emma"), 16).is_err());
    }

    #[test]
    fn a_directory_of_parquet_shards_under_any_names_is_read_in_name_order() {
        use polars::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        // The public copies' shard names, and one with no title column.
        let write = |name: &str, texts: &[&str], titles: Option<&[&str]>| {
            let mut cols = vec![Column::new("text".into(), texts)];
            if let Some(t) = titles {
                cols.push(Column::new("short_book_title".into(), t));
            }
            let mut df = DataFrame::new_infer_height(cols).unwrap();
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            ParquetWriter::new(f).finish(&mut df).unwrap();
        };
        write(
            "train-00001-of-00002-9c1e.parquet",
            &["third book", "fourth book"],
            Some(&["C", "D"]),
        );
        write(
            "train-00000-of-00002-a7f3.parquet",
            &["first book", "second book"],
            Some(&["A", "B"]),
        );
        write("0000.parquet", &["zeroth"], None);
        std::fs::write(dir.path().join("notes.md"), "not a corpus file").unwrap();
        let docs = CorpusSource::parse(dir.path().to_str().unwrap())
            .unwrap()
            .documents(&|_| {})
            .unwrap();
        let got: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| (d.name.as_str(), d.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("0000/row0", "zeroth"),
                ("train-00000-of-00002-a7f3/A", "first book"),
                ("train-00000-of-00002-a7f3/B", "second book"),
                ("train-00001-of-00002-9c1e/C", "third book"),
                ("train-00001-of-00002-9c1e/D", "fourth book"),
            ]
        );
    }

    /// PG-19 from the local hub cache in both supported layouts: the Parquet shards of
    /// `emozilla/pg19` and the hub conversion of `deepmind/pg19` (`refs/convert/parquet`), each
    /// written by the test; the first copy that has the split wins, shards in name order.
    #[test]
    fn pg19_is_read_from_either_copys_layout_in_the_hub_cache() {
        use polars::prelude::*;
        let write = |path: &Path, titles: &[&str]| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let texts: Vec<String> = titles.iter().map(|t| format!("text of {t}")).collect();
            let mut df = DataFrame::new_infer_height(vec![
                Column::new("short_book_title".into(), titles),
                Column::new("text".into(), texts),
            ])
            .unwrap();
            ParquetWriter::new(std::fs::File::create(path).unwrap())
                .finish(&mut df)
                .unwrap();
        };
        assert!(pg19_file_matches(
            "data/train-00000-of-00023-1a2b.parquet",
            "train"
        ));
        assert!(pg19_file_matches("default/train/0000.parquet", "train"));
        assert!(pg19_file_matches(
            "default/partial-train/0003.parquet",
            "train"
        ));
        assert!(!pg19_file_matches(
            "data/test-00000-of-00001-1a2b.parquet",
            "train"
        ));
        assert!(!pg19_file_matches(
            "default/validation/0000.parquet",
            "train"
        ));
        assert!(!pg19_file_matches(
            "data/train-00000-of-00023.json",
            "train"
        ));

        let home = tempfile::tempdir().unwrap();
        let hub = home.path().join("hub");
        let deepmind = hub.join("datasets--deepmind--pg19/snapshots/c0ffee/default");
        write(&deepmind.join("train/0001.parquet"), &["D2"]);
        write(&deepmind.join("train/0000.parquet"), &["D1"]);
        write(&deepmind.join("test/0000.parquet"), &["T1"]);
        let titles = |split: &str, files: usize| -> Vec<String> {
            // The hub cache is found through HF_HOME, read by the child process only.
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "corpus::tests::pg19_child", "--nocapture"])
                .env("PG19_CHILD", format!("{split}:{files}"))
                .env("HF_HOME", home.path())
                .env("HF_HUB_OFFLINE", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("DOC "))
                .map(String::from)
                .collect()
        };
        assert_eq!(titles("train", 5), ["D1", "D2"]);
        assert_eq!(titles("test", 5), ["T1"]);
        // Once emozilla's shards are there, they come first.
        let emozilla = hub.join("datasets--emozilla--pg19/snapshots/beef/data");
        write(&emozilla.join("train-00001-of-00002-ffee.parquet"), &["E3"]);
        write(
            &emozilla.join("train-00000-of-00002-abcd.parquet"),
            &["E1", "E2"],
        );
        assert_eq!(titles("train", 5), ["E1", "E2", "E3"]);
        assert_eq!(titles("train", 1), ["E1", "E2"]);
        assert_eq!(titles("test", 5), ["T1"]);
        let none = titles("validation", 1);
        assert_eq!(none, ["ERROR"]);
    }

    /// Run by the test above in a child process with HF_HOME set; prints the documents' names.
    #[test]
    fn pg19_child() {
        let Ok(spec) = std::env::var("PG19_CHILD") else {
            return;
        };
        match CorpusSource::parse(&format!("pg19:{spec}"))
            .unwrap()
            .documents(&|_| {})
        {
            Ok(docs) => {
                for d in docs {
                    println!("DOC {}", d.name);
                }
            }
            Err(e) => {
                assert!(e.to_string().contains("pass --data DIR"), "{e}");
                println!("DOC ERROR");
            }
        }
    }
}
