//! Prompt lookup: draft tokens copied from earlier text (prompt or output) that followed an
//! earlier occurrence of the last n tokens. No draft model; cheap enough to run every step.

use rand::rngs::StdRng;

use crate::spec::{Draft, Drafter};
use crate::{Result, SamplingParams};

/// Matches the last `max_ngram` tokens (then shorter, down to `min_ngram`) against earlier
/// context; the most recent earlier occurrence wins.
#[derive(Clone, Debug)]
pub struct PromptLookup {
    pub max_ngram: usize,
    pub min_ngram: usize,
}

impl PromptLookup {
    /// Matches n-grams of `max_ngram` down to 2 tokens (1 when `max_ngram` is 1): one
    /// matching token is a weak signal, and falling back to it drafts more tokens for
    /// hardly more accepted (bench/notes/serve.md).
    pub fn new(max_ngram: usize) -> PromptLookup {
        let max_ngram = max_ngram.max(1);
        PromptLookup {
            max_ngram,
            min_ngram: max_ngram.min(2),
        }
    }

    /// Up to `k` tokens that followed the most recent earlier occurrence of the context's
    /// last n tokens, for the longest n in `max_ngram..=min_ngram` that occurs.
    pub fn lookup(&self, context: &[u32], k: usize) -> Vec<u32> {
        let len = context.len();
        for n in (self.min_ngram.max(1)..=self.max_ngram).rev() {
            if len <= n || k == 0 {
                continue;
            }
            let pat = &context[len - n..];
            // An earlier start j with context[j..j+n] == pat and a continuation (j + n < len).
            if let Some(j) = (0..len - n).rev().find(|&j| &context[j..j + n] == pat) {
                let from = j + n;
                return context[from..(from + k).min(len)].to_vec();
            }
        }
        Vec::new()
    }
}

impl Drafter for PromptLookup {
    fn name(&self) -> String {
        format!("prompt-lookup(n={})", self.max_ngram)
    }

    fn propose(
        &mut self,
        context: &[u32],
        k: usize,
        _params: &SamplingParams,
        _rng: &mut StdRng,
    ) -> Result<Draft> {
        Ok(Draft {
            tokens: self.lookup(context, k),
            q: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_what_followed_the_last_ngram() {
        let pl = PromptLookup::new(2);
        // ... 5 6 7 8 ... 5 6 -> 7 8 9
        let ctx = [1, 5, 6, 7, 8, 9, 2, 5, 6];
        assert_eq!(pl.lookup(&ctx, 3), vec![7, 8, 9]);
        assert_eq!(pl.lookup(&ctx, 10), vec![7, 8, 9, 2, 5, 6]);
        // No 1-gram fallback from n = 2 (unless asked for); nothing matches: no draft.
        assert!(pl.lookup(&[4, 1, 3, 9, 1], 2).is_empty());
        let one = PromptLookup {
            max_ngram: 2,
            min_ngram: 1,
        };
        assert_eq!(one.lookup(&[4, 1, 3, 9, 1], 2), vec![3, 9]);
        assert!(pl.lookup(&[1, 2, 3], 4).is_empty());
        // The most recent occurrence wins.
        assert_eq!(PromptLookup::new(1).lookup(&[7, 1, 7, 2, 7], 1), vec![2]);
        // A longer match wins over a more recent shorter one.
        let pl3 = PromptLookup::new(3);
        assert_eq!(pl3.lookup(&[1, 2, 3, 4, 2, 3, 5, 1, 2, 3], 1), vec![4]);
    }
}
