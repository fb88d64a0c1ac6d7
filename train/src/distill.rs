//! Self-distillation data (as Medusa-2 and EAGLE train their heads): continuations of corpus
//! prompts sampled from the frozen base itself, so the heads learn the text they will have to
//! predict at inference (the base's own, under the serving sampler) rather than a corpus the base
//! would not have written.
//!
//! Sample `i` continues a `prompt_len`-token window of the training documents (spread evenly over
//! them, never the held-out document) for `gen_len` tokens with plain AR decoding under the given
//! sampler, seeded `seed + i`; `temperatures` are cycled over the samples (e.g. `0,1`: half
//! greedy, half the paper's sampler). The samples are cached on disk, one JSON line per sample,
//! appended as each finishes: an interrupted run resumes at the first missing sample, and a
//! finished set is reused by every run with the same base, documents and settings (the file name
//! is a hash of all of them).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenswift_datasets::TokenizedDocument;
use tokenswift_infer::decoding::ar::generate_ar;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

use crate::error::{Result, TrainError};

/// What the distilled samples are made of.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillSettings {
    /// Number of continuations.
    pub samples: usize,
    /// Corpus tokens before each continuation.
    pub prompt_len: usize,
    /// Tokens generated per continuation.
    pub gen_len: usize,
    /// Temperatures cycled over the samples (0 = greedy); every other sampling setting comes
    /// from `sampling`.
    pub temperatures: Vec<f32>,
    /// The serving sampler (its temperature is replaced by `temperatures`, its seed by
    /// `seed + i`).
    pub sampling: SamplingConfig,
    pub seed: u64,
}

impl DistillSettings {
    /// Checks the settings before any work; one sentence per problem.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let usage = |m: String| Err(TrainError::Usage(m));
        if self.samples == 0 {
            return usage("--distill-samples must be at least 1".into());
        }
        if self.prompt_len == 0 || self.gen_len == 0 {
            return usage("--distill-prompt-len and --distill-len must be at least 1 token".into());
        }
        if self.temperatures.is_empty() {
            return usage("--distill-temperatures needs at least one value".into());
        }
        for &t in &self.temperatures {
            let mut s = self.sampling.clone();
            s.temperature = t;
            s.validate(vocab)?;
        }
        Ok(())
    }

    /// The sampler of sample `i`.
    pub fn sampler(&self, i: usize) -> SamplingConfig {
        let mut s = self.sampling.clone();
        s.temperature = self.temperatures[i % self.temperatures.len()];
        s.seed = self.seed.wrapping_add(i as u64);
        s
    }

    /// A hash of everything that determines the samples: the base, the documents, these settings.
    pub fn key(&self, base_fingerprint: &str, docs: &[TokenizedDocument]) -> String {
        let mut h = Sha256::new();
        h.update(b"tokenswift-distill-v1\0");
        h.update(base_fingerprint.as_bytes());
        h.update(format!("{self:?}").as_bytes());
        for d in docs {
            h.update(d.name.as_bytes());
            h.update((d.tokens.len() as u64).to_le_bytes());
            for t in &d.tokens {
                h.update(t.to_le_bytes());
            }
        }
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One cached sample: the prompt's origin and the whole sequence (prompt, then continuation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub i: usize,
    pub doc: String,
    pub offset: usize,
    pub prompt_len: usize,
    pub temperature: f32,
    pub tokens: Vec<u32>,
}

/// Where sample `i`'s prompt comes from: `(document index, offset)`. Documents shorter than
/// `prompt_len + 1` are skipped; the samples go round-robin over the rest, and the prompts of one
/// document are spread evenly over its length.
pub fn prompt_origins(
    docs: &[TokenizedDocument],
    samples: usize,
    prompt_len: usize,
) -> Result<Vec<(usize, usize)>> {
    let usable: Vec<usize> = (0..docs.len())
        .filter(|&d| docs[d].tokens.len() > prompt_len)
        .collect();
    if usable.is_empty() {
        return Err(TrainError::Usage(format!(
            "no training document has more than {prompt_len} tokens to take a distillation prompt from (lower --distill-prompt-len)"
        )));
    }
    let per_doc = samples.div_ceil(usable.len());
    Ok((0..samples)
        .map(|i| {
            let d = usable[i % usable.len()];
            let j = i / usable.len();
            let room = docs[d].tokens.len() - prompt_len;
            (d, j * room / per_doc)
        })
        .collect())
}

/// Reads the samples already in `path` (a missing file is an empty set). A line that does not
/// parse — the tail of an interrupted write — ends the set: it and anything after it are redone.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        match serde_json::from_str::<Sample>(&line) {
            Ok(s) if s.i == out.len() => out.push(s),
            _ => break,
        }
    }
    Ok(out)
}

/// The cache file of a set of samples.
pub fn cache_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.jsonl"))
}

/// Makes (or resumes, or reuses) the distilled samples of `docs` in `path`. `progress(done,
/// total, tokens_generated_this_run)` is called after each sample.
pub fn distill(
    model: &Model,
    docs: &[TokenizedDocument],
    settings: &DistillSettings,
    path: &Path,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<Vec<Sample>> {
    settings.validate(model.config().vocab_size)?;
    let origins = prompt_origins(docs, settings.samples, settings.prompt_len)?;
    let mut samples = read_samples(path)?;
    samples.truncate(settings.samples);
    for s in &samples {
        let (d, o) = origins[s.i];
        if s.doc != docs[d].name || s.offset != o || s.prompt_len != settings.prompt_len {
            return Err(TrainError::Usage(format!(
                "{} holds samples of other prompts than these settings make; delete it or pass another --distill-dir",
                path.display()
            )));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    // Rewrite what was read (drops a torn last line), then append.
    let mut text = String::new();
    for s in &samples {
        text.push_str(&serde_json::to_string(s).unwrap_or_default());
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.partial");
    std::fs::write(&tmp, &text).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    let mut generated = 0;
    progress(samples.len(), settings.samples, generated);
    for (i, &(d, offset)) in origins.iter().enumerate().skip(samples.len()) {
        let prompt = &docs[d].tokens[offset..offset + settings.prompt_len];
        let sampler = settings.sampler(i);
        // On a pool worker, as the other binaries run their whole command (DESIGN §6.4); here only
        // the generation, since training runs its own worker threads that block on each other.
        let (out, _) = tokenswift_infer::host::on_pool(|| {
            generate_ar(
                model,
                prompt,
                settings.gen_len,
                &sampler,
                false,
                &mut |_| Ok(()),
            )
        })?;
        generated += out.len();
        let mut tokens = prompt.to_vec();
        tokens.extend_from_slice(&out);
        let s = Sample {
            i,
            doc: docs[d].name.clone(),
            offset,
            prompt_len: settings.prompt_len,
            temperature: sampler.temperature,
            tokens,
        };
        writeln!(file, "{}", serde_json::to_string(&s).unwrap_or_default())
            .and_then(|_| file.flush())
            .map_err(|e| TrainError::io(path, e))?;
        samples.push(s);
        progress(samples.len(), settings.samples, generated);
    }
    Ok(samples)
}

/// The samples as training documents (`distill-<i>`).
pub fn as_documents(samples: &[Sample]) -> Vec<TokenizedDocument> {
    samples
        .iter()
        .map(|s| TokenizedDocument {
            name: format!("distill-{}", s.i),
            tokens: s.tokens.clone(),
        })
        .collect()
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
    fn prompts_go_round_robin_and_spread_over_each_document() {
        let docs = [doc("a", 1000), doc("short", 5), doc("b", 500)];
        let o = prompt_origins(&docs, 5, 100).unwrap();
        assert_eq!(o, vec![(0, 0), (2, 0), (0, 300), (2, 133), (0, 600)]);
        for &(d, off) in &o {
            assert!(off + 100 <= docs[d].tokens.len());
        }
        assert!(prompt_origins(&[doc("short", 5)], 3, 100).is_err());
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_later_lines_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let s = |i| Sample {
            i,
            doc: "a".into(),
            offset: 0,
            prompt_len: 1,
            temperature: 0.0,
            tokens: vec![1, 2, 3],
        };
        let line = |i| serde_json::to_string(&s(i)).unwrap();
        std::fs::write(
            &path,
            format!("{}\n{}\n{{\"i\":2,\"do\n{}\n", line(0), line(1), line(3)),
        )
        .unwrap();
        assert_eq!(read_samples(&path).unwrap(), vec![s(0), s(1)]);
        assert!(
            read_samples(&dir.path().join("missing.jsonl"))
                .unwrap()
                .is_empty()
        );
    }
}
