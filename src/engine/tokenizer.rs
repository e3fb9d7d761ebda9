//! Whisper's vocabulary: token ids <-> the byte-level BPE strings CTranslate2
//! speaks, the special tokens, and decoding ids to text.
//!
//! The model folder's `vocabulary.txt` (or `.json`) lists every token,
//! timestamps included, in id order; that is the table CTranslate2 uses, so
//! we read the same one.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read the vocabulary in {0}: {1}")]
    Io(String, std::io::Error),
    #[error("invalid vocabulary in {0}: {1}")]
    Invalid(String, String),
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    byte_of_char: HashMap<char, u8>,
    pub eot: u32,
    pub sot: u32,
    pub transcribe: u32,
    pub translate: u32,
    pub sot_prev: u32,
    pub no_timestamps: u32,
    pub no_speech: u32,
    /// First timestamp token (`<|0.00|>`); each next one is 20 ms later.
    pub timestamp_begin: u32,
}

impl Tokenizer {
    pub fn from_model_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let txt = dir.join("vocabulary.txt");
        let json = dir.join("vocabulary.json");
        let (path, tokens) = if txt.exists() {
            let s = std::fs::read_to_string(&txt)
                .map_err(|e| TokenizerError::Io(txt.display().to_string(), e))?;
            (txt, s.lines().map(str::to_string).collect::<Vec<_>>())
        } else {
            let s = std::fs::read_to_string(&json)
                .map_err(|e| TokenizerError::Io(json.display().to_string(), e))?;
            let v: Vec<String> = serde_json::from_str(&s)
                .map_err(|e| TokenizerError::Invalid(json.display().to_string(), e.to_string()))?;
            (json, v)
        };
        Self::from_tokens(tokens).map_err(|e| TokenizerError::Invalid(path.display().to_string(), e))
    }

    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, String> {
        let ids: HashMap<String, u32> =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let id = |t: &str| ids.get(t).copied().ok_or_else(|| format!("no token {t}"));
        let no_timestamps = id("<|notimestamps|>")?;
        let no_speech = id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?;
        let byte_of_char = bytes_to_unicode().into_iter().map(|(b, c)| (c, b)).collect();
        Ok(Self {
            eot: id("<|endoftext|>")?,
            sot: id("<|startoftranscript|>")?,
            transcribe: id("<|transcribe|>")?,
            translate: id("<|translate|>")?,
            sot_prev: id("<|startofprev|>")?,
            no_timestamps,
            no_speech,
            timestamp_begin: no_timestamps + 1,
            tokens,
            ids,
            byte_of_char,
        })
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The id of a language's token, from its code ("en" -> `<|en|>`).
    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.id(&format!("<|{code}|>"))
    }

    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// Text of the ordinary tokens among `ids` (special and timestamp tokens
    /// are left out), with byte-level BPE undone and invalid UTF-8 replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// The bytes of the ordinary tokens among `ids` (a token may hold part
    /// of a UTF-8 character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &id in ids.iter().filter(|&&id| id < self.eot) {
            if let Some(tok) = self.token(id) {
                for c in tok.chars() {
                    match self.byte_of_char.get(&c) {
                        Some(b) => bytes.push(*b),
                        None => bytes.extend_from_slice(c.to_string().as_bytes()),
                    }
                }
            }
        }
        bytes
    }
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((b as u8, char::from_u32(c)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Tokenizer {
        let mut toks: Vec<String> = vec!["Hello".into(), "Ġworld".into(), "Ã©".into(), ",".into()];
        for s in ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>", "<|0.00|>", "<|0.02|>"] {
            toks.push(s.into());
        }
        Tokenizer::from_tokens(toks).unwrap()
    }

    #[test]
    fn decodes_byte_level_bpe_and_skips_specials() {
        let t = tiny();
        assert_eq!(t.decode(&[0, 1, 3]), "Hello world,");
        assert_eq!(t.decode(&[2]), "é");
        assert_eq!(t.decode(&[t.sot, 0, t.timestamp_begin, t.eot]), "Hello");
        assert_eq!(t.timestamp_begin, t.no_timestamps + 1);
        assert_eq!(t.language_token("en"), Some(6));
    }
}
