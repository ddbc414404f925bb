//! Scheduling decisions as pure functions of the queue and sequence state, apart from
//! running them: which waiting requests are admitted ([`admit`]) and which rows run in
//! this step ([`plan_rows`]). The engine gathers the state, asks, and carries the plan out.

/// The server's fixed limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most positions per sequence.
    pub context: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// KV blocks in the whole cache.
    pub total_blocks: usize,
    /// Most rows in one batched step (prompt chunks, decode tokens and drafts together).
    pub max_rows: usize,
}

/// A waiting request, as admission sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub prompt_tokens: usize,
    pub max_tokens: usize,
}

/// What happens to a request at the head of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It can never fit (empty prompt, no room to generate, more blocks than the cache
    /// has): answered with an error and dropped from the queue.
    Reject {
        prompt_tokens: usize,
        max_new: usize,
    },
    /// It starts now, reserving `blocks` KV blocks (its prompt plus `max_new` tokens, so
    /// a running sequence never runs out).
    Start { max_new: usize, blocks: usize },
}

/// Admission in arrival order while sequence slots and KV blocks last: a decision for each
/// request at the head of `queue`, stopping at the first that must wait (the requests
/// after it wait too, so a large request is not overtaken forever).
pub fn admit(
    queue: impl IntoIterator<Item = Waiting>,
    mut free_slots: usize,
    mut free_blocks: usize,
    lim: Limits,
) -> Vec<Admission> {
    let mut out = Vec::new();
    for w in queue {
        let max_new = w
            .max_tokens
            .min(lim.context.saturating_sub(w.prompt_tokens));
        let blocks = (w.prompt_tokens + max_new).div_ceil(lim.block_size);
        if w.prompt_tokens == 0 || max_new == 0 || blocks > lim.total_blocks {
            out.push(Admission::Reject {
                prompt_tokens: w.prompt_tokens,
                max_new,
            });
            continue;
        }
        if free_slots == 0 || blocks > free_blocks {
            break;
        }
        free_slots -= 1;
        free_blocks -= blocks;
        out.push(Admission::Start { max_new, blocks });
    }
    out
}

/// A running sequence, as the row planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    /// Tokens not yet in the KV cache: the rest of the prompt, or the one token to decode.
    pub pending: usize,
    /// Draft tokens it could verify this step (0 unless it is decoding with speculation).
    pub draft: usize,
}

/// A sequence's share of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Index into the `running` slice.
    pub seq: usize,
    /// Pending tokens that run as rows this step.
    pub take: usize,
    /// Whether that is all its pending tokens, so its last row produces output.
    pub done: bool,
    /// Draft tokens after them (each a row producing output).
    pub draft: usize,
}

/// The rows of one step, within `max_rows`: decoding sequences first (one row each, plus
/// their drafts), then prompt chunks in running order; a prompt that does not fit whole
/// runs a chunk now and the rest in later steps.
pub fn plan_rows(running: &[Running], max_rows: usize) -> Vec<Share> {
    let mut order: Vec<usize> = (0..running.len()).collect();
    order.sort_by_key(|&i| running[i].pending > 1);
    let mut rows = 0;
    let mut plan = Vec::new();
    for seq in order {
        let budget = max_rows - rows;
        if budget == 0 {
            break;
        }
        let r = running[seq];
        let take = r.pending.min(budget);
        let draft = if r.pending == 1 {
            r.draft.min(budget - 1)
        } else {
            0
        };
        rows += take + draft;
        plan.push(Share {
            seq,
            take,
            done: take == r.pending,
            draft,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        context: 64,
        block_size: 16,
        total_blocks: 8,
        max_rows: 8,
    };

    fn w(prompt_tokens: usize, max_tokens: usize) -> Waiting {
        Waiting {
            prompt_tokens,
            max_tokens,
        }
    }

    #[test]
    fn admission_reserves_prompt_and_max_tokens_in_order() {
        // 10 + 20 tokens: 2 blocks; 40 + 24 (max_tokens capped by the context): 4 blocks.
        let a = admit([w(10, 20), w(40, 100), w(5, 5)], 4, 8, LIM);
        assert_eq!(
            a,
            vec![
                Admission::Start {
                    max_new: 20,
                    blocks: 2
                },
                Admission::Start {
                    max_new: 24,
                    blocks: 4
                },
                Admission::Start {
                    max_new: 5,
                    blocks: 1
                },
            ]
        );
    }

    #[test]
    fn admission_waits_for_blocks_and_slots_without_overtaking() {
        // The second needs 4 blocks, only 3 are left: it and the small one behind it wait.
        let a = admit([w(10, 20), w(40, 20), w(1, 1)], 4, 5, LIM);
        assert_eq!(a.len(), 1);
        assert_eq!(admit([w(1, 1)], 0, 8, LIM), vec![]);
    }

    #[test]
    fn admission_rejects_what_can_never_fit() {
        let small = Limits {
            total_blocks: 2,
            ..LIM
        };
        let a = admit([w(0, 5), w(64, 5), w(30, 30), w(3, 3)], 1, 2, small);
        assert_eq!(
            a,
            vec![
                Admission::Reject {
                    prompt_tokens: 0,
                    max_new: 5
                },
                Admission::Reject {
                    prompt_tokens: 64,
                    max_new: 0
                },
                Admission::Reject {
                    prompt_tokens: 30,
                    max_new: 30
                },
                Admission::Start {
                    max_new: 3,
                    blocks: 1
                },
            ]
        );
    }

    fn r(pending: usize, draft: usize) -> Running {
        Running { pending, draft }
    }

    #[test]
    fn decode_rows_go_first_then_prompt_chunks() {
        let p = plan_rows(&[r(5, 0), r(1, 0), r(6, 0), r(1, 0)], 8);
        let s = |seq, take, done| Share {
            seq,
            take,
            done,
            draft: 0,
        };
        // Decoders 1 and 3, then prompt 0 whole (5 rows), then 1 row of prompt 2.
        assert_eq!(
            p,
            vec![s(1, 1, true), s(3, 1, true), s(0, 5, true), s(2, 1, false)]
        );
    }

    #[test]
    fn drafts_fit_the_row_budget() {
        let p = plan_rows(&[r(1, 4), r(1, 7), r(3, 0)], 8);
        let s = |seq, take, done, draft| Share {
            seq,
            take,
            done,
            draft,
        };
        // 1 + 4 rows, then 1 + 2 (the budget's rest), then nothing for the prompt.
        assert_eq!(p, vec![s(0, 1, true, 4), s(1, 1, true, 2)]);
        // A prompt chunk never drafts.
        assert_eq!(plan_rows(&[r(2, 5)], 8), vec![s(0, 2, true, 0)]);
    }
}
