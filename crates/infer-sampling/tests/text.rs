//! `TextStream` against the server's former text algorithm (decode the whole completion
//! at every token, hold back a trailing partial character and any stop-string prefix, cut
//! at the first stop string) on real tokenizers: the same finish reason at the same token,
//! and the same text wherever the former algorithm's text was the whole decoding cut at
//! the stop string. (Re-decoding can rewrite text already sent, as invalid byte sequences
//! do, and the former algorithm then lost text; the stream gives the whole decoding.)
//! Stop strings and multi-byte characters split across tokens included. Without the
//! tokenizer files these tests print SKIP; under CI=true they fail.

use std::path::{Path, PathBuf};

use infer_models::Tokenizer;
use infer_models::gguf::GgufFile;
use infer_sampling::{FinishReason, TextStream};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A tokenizer file or folder of the repository's (`rel`), or SKIP (a failure under
/// CI=true). Only paths: these tests need no adapter.
fn fixture(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {} is missing",
        p.display()
    );
    eprintln!("SKIP: {} is missing; this test did NOT run", p.display());
    None
}

/// Generated ids and the stopping rules.
#[derive(Clone, Copy)]
struct Case<'a> {
    ids: &'a [u32],
    stops: &'a [String],
    stop_ids: &'a [u32],
    max_new: usize,
}

/// Each token's text, and the finish reason with the index of the token that ended it.
type Output = (Vec<String>, Option<(usize, &'static str)>);

/// The former engine's text for each token, and the finish reason with the token index
/// that ended the sequence.
fn reference(tok: &Tokenizer, c: &Case) -> Output {
    let (ids, stops, stop_ids, max_new) = (c.ids, c.stops, c.stop_ids, c.max_new);
    let mut out = Vec::new();
    let mut emitted = 0;
    let mut tokens = Vec::new();
    for (i, &t) in ids.iter().enumerate() {
        let is_stop = stop_ids.contains(&t);
        tokens.push(t);
        let length = tokens.len() >= max_new;
        let end = tokens.len() - usize::from(is_stop);
        let full = tok.decode(&tokens[..end], true).unwrap_or_default();
        let hit = stops.iter().filter_map(|st| full.find(st.as_str())).min();
        let finishing = is_stop || length || hit.is_some();
        let safe = match hit {
            Some(at) => at,
            None if finishing => full.len(),
            None => {
                let mut safe = full.trim_end_matches('\u{FFFD}').len();
                for st in stops {
                    for k in (1..st.len()).rev() {
                        if st.is_char_boundary(k) && full[..safe].ends_with(&st[..k]) {
                            safe -= k;
                            break;
                        }
                    }
                }
                safe
            }
        };
        let text = if safe > emitted {
            full.get(emitted..safe).unwrap_or("").to_string()
        } else {
            String::new()
        };
        emitted = emitted.max(safe);
        out.push(text);
        if finishing {
            let r = if is_stop || hit.is_some() {
                "stop"
            } else {
                "length"
            };
            return (out, Some((i, r)));
        }
    }
    (out, None)
}

fn streamed(tok: &Tokenizer, c: &Case) -> Output {
    let (ids, stops, stop_ids, max_new) = (c.ids, c.stops, c.stop_ids, c.max_new);
    let mut ts = TextStream::new(tok, &[], stops, stop_ids.to_vec(), max_new);
    let mut out = Vec::new();
    for (i, &t) in ids.iter().enumerate() {
        let p = ts.push(t).expect("decode");
        out.push(p.text);
        if let Some(r) = p.finish {
            return (out, Some((i, r.as_str())));
        }
    }
    (out, None)
}

/// The whole decoding of the generated ids (a final stop token left out), cut at the
/// first stop string.
fn whole_text(
    tok: &Tokenizer,
    ids: &[u32],
    stops: &[String],
    stop_ids: &[u32],
    finish: Option<(usize, &'static str)>,
) -> String {
    let mut end = finish.map_or(ids.len(), |f| f.0 + 1);
    if end > 0 && stop_ids.contains(&ids[end - 1]) {
        end -= 1;
    }
    let full = tok.decode(&ids[..end], true).expect("decode");
    let cut = stops.iter().filter_map(|st| full.find(st.as_str())).min();
    full[..cut.unwrap_or(full.len())].to_string()
}

const TEXTS: [&str; 4] = [
    "Once upon a time, in a café far away, ENDless stories began. THE END",
    "naïve façade — 你好世界 🙂🙂 emoji and ünïcödé, then STOP here",
    "Tom said: \"END\" and left.\n\nThe dog barked. Stop. stop! S T O P",
    "日本語のテキスト。終わり END 😀 done",
];

fn check(tok: &Tokenizer, name: &str) {
    let stop_sets: Vec<Vec<String>> = vec![
        vec![],
        vec!["END".into()],
        vec!["STOP".into(), "好世".into(), "🙂".into()],
        vec!["\n\n".into(), "dog".into(), "ö".into()],
        vec!["終わり".into(), "xyz".into(), "a ".into()],
        vec!["e".into(), "ed".into()],
    ];
    let mut rng = StdRng::seed_from_u64(7);
    let vocab = tok.vocab_size() as u32;
    let mut cases: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| tok.encode(t, false).expect("encode"))
        .collect();
    // Random ids, but no byte-fallback tokens (`<0xE4>`): a run of them that is not UTF-8
    // decodes to one U+FFFD per byte, the valid ones before included, so no stream of it
    // can match its whole decoding. Real text's byte runs (emoji, CJK above) are UTF-8.
    let plain: Vec<u32> = (0..vocab)
        .filter(|&i| !tok.id_to_token(i).is_some_and(|t| t.starts_with("<0x")))
        .collect();
    for _ in 0..40 {
        let n = rng.random_range(1..40);
        cases.push(
            (0..n)
                .map(|_| plain[rng.random_range(0..plain.len())])
                .collect(),
        );
    }
    let eos = tok.eos_ids().to_vec();
    let (mut compared, mut rewritten) = (0, 0);
    for ids in &cases {
        for stops in &stop_sets {
            for max_new in [ids.len(), ids.len() / 2 + 1, 3] {
                let case = Case {
                    ids,
                    stops,
                    stop_ids: &eos,
                    max_new,
                };
                let want = reference(tok, &case);
                let got = streamed(tok, &case);
                assert_eq!(
                    got.1, want.1,
                    "{name}: finish for {ids:?}, stops {stops:?}, max {max_new}"
                );
                let whole = whole_text(tok, ids, stops, &eos, got.1);
                assert_eq!(
                    got.0.concat(),
                    whole,
                    "{name}: text for {ids:?}, stops {stops:?}, max {max_new}"
                );
                if want.0.concat() == whole {
                    compared += 1;
                } else {
                    rewritten += 1;
                }
            }
        }
    }
    eprintln!(
        "{name}: {compared} cases the same text; {rewritten} where the former text lost what \
         re-decoding rewrote"
    );
    assert!(
        compared > 10 * rewritten,
        "{name}: mostly well-formed cases"
    );
}

#[test]
fn text_stream_matches_whole_decoding_stories260k() {
    let Some(dir) = fixture("tests/fixtures/stories260K") else {
        return;
    };
    let tok = Tokenizer::from_hf_dir(&dir).expect("tokenizer");
    check(&tok, "stories260K");
}

fn smollm2_tokenizer() -> Option<Tokenizer> {
    let path = fixture("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let g = GgufFile::open(&path).expect("gguf");
    Some(Tokenizer::from_gguf(&g).expect("tokenizer"))
}

#[test]
fn text_stream_matches_whole_decoding_smollm2() {
    if let Some(tok) = smollm2_tokenizer() {
        check(&tok, "SmolLM2");
    }
}

#[test]
fn stop_string_split_across_tokens_and_utf8_split_across_tokens() {
    let Some(tok) = smollm2_tokenizer() else {
        return;
    };
    let ids = tok.encode("a 🙂 b THE END c", false).expect("encode");
    let stops = vec!["E END".to_string()];
    let case = Case {
        ids: &ids,
        stops: &stops,
        stop_ids: &[],
        max_new: 100,
    };
    let (pieces, fin) = streamed(&tok, &case);
    assert_eq!(pieces.concat(), "a 🙂 b TH");
    assert_eq!(fin.map(|f| f.1), Some(FinishReason::Stop.as_str()));
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
}
