//! The text side of generation, token by token: incremental detokenizing
//! ([`StreamDecoder`]), stop tokens, stop strings held back while they may still match
//! ([`StopFilter`]) and the length limit, ending in a [`FinishReason`]. [`crate::generate`],
//! speculative generation and infer-serve's engine all stream through [`TextStream`], so a
//! prompt gives the same text whichever runs it. Each token's text is decoded once (a
//! window of the last tokens, not the whole completion again).

use infer_models::{StreamDecoder, Tokenizer};

use crate::{Result, SamplingParams};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// max_tokens reached.
    Length,
}

impl FinishReason {
    /// The OpenAI name (`finish_reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

impl SamplingParams {
    /// The ids that end generation: the stop token ids, plus `eos` unless `ignore_eos`.
    pub fn stop_ids(&self, eos: &[u32]) -> Vec<u32> {
        let mut ids = self.stop_token_ids.clone();
        if !self.ignore_eos {
            ids.extend(eos);
        }
        ids
    }
}

/// Holds back streamed text that might be the start of a stop string.
#[derive(Clone, Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    pub fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops.to_vec(),
            pending: String::new(),
        }
    }

    /// Adds text; returns (text safe to emit, whether a stop string was hit). After a hit
    /// the stop string and everything after it are dropped.
    pub fn push(&mut self, s: &str) -> (String, bool) {
        self.pending.push_str(s);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|st| self.pending.find(st.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let mut keep = 0;
        for st in &self.stops {
            for k in (1..st.len().min(self.pending.len() + 1)).rev() {
                if self.pending.is_char_boundary(self.pending.len() - k)
                    && st.starts_with(&self.pending[self.pending.len() - k..])
                {
                    keep = keep.max(k);
                    break;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The text held back (no stop string followed it), emptying the filter.
    pub fn take_pending(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// One generated token's share of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The text this token completes (possibly empty while a multi-byte character or a
    /// possible stop string is held back); on the last token, everything held back too.
    pub text: String,
    /// `Some` when this token ends generation.
    pub finish: Option<FinishReason>,
}

/// Turns generated ids into streamed text, deciding where generation stops.
pub struct TextStream<'a> {
    dec: StreamDecoder<'a>,
    filter: StopFilter,
    stop_ids: Vec<u32>,
    max_tokens: usize,
    tokens: usize,
    finish: Option<FinishReason>,
}

impl<'a> TextStream<'a> {
    /// `context`: ids before the first generated one (the prompt's last few, or none),
    /// decoded only to give the first generated token its leading space; `stop_ids`: the
    /// ids that end generation ([`SamplingParams::stop_ids`]); generation also ends after
    /// `max_tokens` tokens.
    pub fn new(
        tok: &'a Tokenizer,
        context: &[u32],
        stops: &[String],
        stop_ids: Vec<u32>,
        max_tokens: usize,
    ) -> Self {
        TextStream {
            dec: StreamDecoder::with_context(tok, context, true),
            filter: StopFilter::new(stops),
            stop_ids,
            max_tokens,
            tokens: 0,
            finish: None,
        }
    }

    /// Takes one generated token. A stop token adds no text of its own.
    pub fn push(&mut self, t: u32) -> Result<Piece> {
        debug_assert!(self.finish.is_none(), "a token after the end");
        self.tokens += 1;
        if self.stop_ids.contains(&t) {
            let text = self.end_with(FinishReason::Stop)?;
            return Ok(Piece {
                text,
                finish: self.finish,
            });
        }
        let mut text = String::new();
        if let Some(s) = self.dec.push(t)? {
            let (out, hit) = self.filter.push(&s);
            text = out;
            if hit {
                self.finish = Some(FinishReason::Stop);
                return Ok(Piece {
                    text,
                    finish: self.finish,
                });
            }
        }
        if self.tokens >= self.max_tokens {
            text.push_str(&self.end_with(FinishReason::Length)?);
        }
        Ok(Piece {
            text,
            finish: self.finish,
        })
    }

    /// Ends generation early (the context is full): returns the text held back. Nothing
    /// when it has ended already.
    pub fn end(&mut self) -> Result<String> {
        if self.finish.is_some() {
            return Ok(String::new());
        }
        self.end_with(FinishReason::Length)
    }

    /// `None` while generation goes on.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Flushes the decoder and the stop filter: a stop string in the flushed text still
    /// stops there (and makes the reason `Stop`).
    fn end_with(&mut self, reason: FinishReason) -> Result<String> {
        let tail = self.dec.finish()?;
        let (mut out, hit) = self.filter.push(&tail);
        if hit {
            self.finish = Some(FinishReason::Stop);
        } else {
            out.push_str(&self.filter.take_pending());
            self.finish = Some(reason);
        }
        Ok(out)
    }
}

/// [`TextStream`] for the generation loops: keeps the ids and the whole text and streams
/// each token's text to `on_text`.
pub(crate) struct Emitter<'a, F: FnMut(&str)> {
    stream: TextStream<'a>,
    pub text: String,
    pub ids: Vec<u32>,
    on_text: F,
}

impl<'a, F: FnMut(&str)> Emitter<'a, F> {
    /// `eos`: the tokenizer's and the model's end-of-sequence ids.
    pub fn new(
        tok: &'a Tokenizer,
        prompt_ids: &[u32],
        params: &SamplingParams,
        eos: &[u32],
        on_text: F,
    ) -> Self {
        let context = &prompt_ids[prompt_ids.len().saturating_sub(4)..];
        Emitter {
            stream: TextStream::new(
                tok,
                context,
                &params.stop,
                params.stop_ids(eos),
                params.max_tokens,
            ),
            text: String::new(),
            ids: Vec::new(),
            on_text,
        }
    }

    fn emit(&mut self, s: &str) {
        if !s.is_empty() {
            self.text.push_str(s);
            (self.on_text)(s);
        }
    }

    /// Emits one generated token; `true` when generation must end (stop token or string,
    /// max tokens).
    pub fn push(&mut self, t: u32) -> Result<bool> {
        self.ids.push(t);
        let p = self.stream.push(t)?;
        self.emit(&p.text);
        Ok(p.finish.is_some())
    }

    /// Flushes held-back text; the reason generation ended.
    pub fn finish(&mut self) -> Result<FinishReason> {
        let tail = self.stream.end()?;
        self.emit(&tail);
        Ok(self
            .stream
            .finish_reason()
            .expect("a stream has a reason once ended"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_filter_holds_back_partial_matches() {
        let mut f = StopFilter::new(&["END".into()]);
        assert_eq!(f.push("abc E"), ("abc ".to_string(), false));
        assert_eq!(f.push("N"), (String::new(), false));
        assert_eq!(f.push("Dxyz"), (String::new(), true));
        let mut f = StopFilter::new(&["END".into()]);
        assert_eq!(f.push("E"), (String::new(), false));
        assert_eq!(f.push("x"), ("Ex".to_string(), false));
    }

    #[test]
    fn stop_filter_earliest_stop_and_longest_prefix_win() {
        let mut f = StopFilter::new(&["xyz".into(), "b".into()]);
        assert_eq!(f.push("a xy"), ("a ".to_string(), false));
        // "b" completes before "xyz" would: the earlier stop string ends the text.
        assert_eq!(f.push("b"), ("xy".to_string(), true));
        let mut f = StopFilter::new(&["ab".into(), "aab".into()]);
        assert_eq!(f.push("caa"), ("c".to_string(), false));
        assert_eq!(f.take_pending(), "aa");
    }

    #[test]
    fn stop_filter_keeps_multibyte_characters_whole() {
        let mut f = StopFilter::new(&["é!".into()]);
        assert_eq!(f.push("café"), ("caf".to_string(), false));
        assert_eq!(f.push("?"), ("é?".to_string(), false));
        assert_eq!(f.push("é!"), (String::new(), true));
    }

    #[test]
    fn stop_ids_follow_ignore_eos() {
        let p = SamplingParams {
            stop_token_ids: vec![7],
            ..Default::default()
        };
        assert_eq!(p.stop_ids(&[2, 3]), vec![7, 2, 3]);
        let p = SamplingParams {
            ignore_eos: true,
            ..p
        };
        assert_eq!(p.stop_ids(&[2, 3]), vec![7]);
        assert_eq!(FinishReason::Length.as_str(), "length");
    }
}
