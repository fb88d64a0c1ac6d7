//! The tokenizer: a Hugging Face `tokenizer.json` through the `tokenizers` crate, plus the ChatML
//! prompt template of the instruct models.

use std::path::{Path, PathBuf};

use crate::error::{InferError, Result};

/// Text ⇄ token ids.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from a checkpoint directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(InferError::Tokenizer {
                path,
                reason: "the file does not exist".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| InferError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { inner, path })
    }

    /// Token ids of `text`; special tokens written in the text (e.g. `<|im_start|>`) are recognised,
    /// and nothing is prepended.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| InferError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| InferError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Wraps a user message in the ChatML template of the SmolLM2/Qwen instruct models, ready for the
/// assistant's reply.
pub fn chatml_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

/// Streams text from generated tokens: decodes the whole tail since the last emitted boundary so
/// that multi-byte characters split across tokens come out whole.
pub struct TextStream {
    tokens: Vec<u32>,
    emitted: usize,
}

impl Default for TextStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TextStream {
    pub fn new() -> Self {
        Self {
            tokens: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds `token` and returns the newly completed text, if any.
    pub fn push(&mut self, tokenizer: &TextTokenizer, token: u32) -> Result<String> {
        self.tokens.push(token);
        let text = tokenizer.decode(&self.tokens)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        // Keep the buffer short: restart from the last token once text is flushed.
        if self.tokens.len() > 64 {
            self.tokens.clear();
            self.emitted = 0;
        }
        Ok(new)
    }
}
