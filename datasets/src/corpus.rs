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
    /// PG-19 (`deepmind/pg19`) through the Hugging Face hub: the first `files` Parquet files of
    /// `split` (`train`, `validation` or `test`). Needs network access (or the local hub cache
    /// with `HF_HUB_OFFLINE=1`).
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
            CorpusSource::Directory(dir) => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map_err(|e| DatasetError::io(dir, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("txt"))
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(DatasetError::Corpus(format!(
                        "directory {} has no .txt files",
                        dir.display()
                    )));
                }
                files.iter().map(|p| text_document(p)).collect()
            }
            CorpusSource::TextFile(p) => Ok(vec![text_document(p)?]),
            CorpusSource::Jsonl(p) => jsonl_documents(p),
            CorpusSource::Parquet(p) => parquet_documents(p),
            CorpusSource::Pg19 { split, files } => pg19_documents(split, *files, progress),
        }
    }
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

/// PG-19 books of `split` from the hub's `deepmind/pg19` Parquet files (the first `files` of
/// them, sorted by name).
fn pg19_documents(split: &str, files: usize, progress: &dyn Fn(&str)) -> Result<Vec<Document>> {
    let hint = |why: String| {
        DatasetError::Unavailable(format!(
            "cannot get PG-19 from the Hugging Face hub ({why}); use `--data austen` (offline) or a local corpus"
        ))
    };
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let repo_id = "deepmind/pg19".to_string();
    let paths: Vec<PathBuf> = if offline {
        let cache = hf_hub::Cache::from_env().dataset(repo_id);
        let names: Vec<String> = (0..files)
            .map(|i| format!("data/{split}-{i:05}.parquet"))
            .collect();
        names
            .iter()
            .map(|n| {
                cache.get(n).ok_or_else(|| {
                    hint(format!(
                        "HF_HUB_OFFLINE is set and {n} is not in the local hub cache"
                    ))
                })
            })
            .collect::<Result<_>>()?
    } else {
        progress(&format!(
            "listing deepmind/pg19 ({split}) on the Hugging Face hub"
        ));
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| hint(e.to_string()))?;
        let repo = api.dataset(repo_id);
        let info = repo.info().map_err(|e| hint(e.to_string()))?;
        let mut names: Vec<String> = info
            .siblings
            .into_iter()
            .map(|s| s.rfilename)
            .filter(|n| n.ends_with(".parquet") && n.contains(split))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(hint(format!(
                "the repository lists no Parquet file for split `{split}`"
            )));
        }
        names
            .iter()
            .take(files)
            .map(|n| {
                progress(&format!("downloading {n}"));
                repo.get(n).map_err(|e| hint(e.to_string()))
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
    Ok(long
        .iter()
        .flat_map(|d| d.tokens.chunks_exact(seq_len).map(|c| c.to_vec()))
        .collect())
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
        assert!(e.contains("no .txt files"), "{e}");
    }
}
