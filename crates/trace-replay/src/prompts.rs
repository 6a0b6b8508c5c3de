//! Exact prompt lengths against real servers. A prompt of "1024 tokens" must be 1024 tokens to
//! the server's own tokenizer: counted in whitespace words, as the simulator counts, a random
//! prompt on a BPE vocabulary comes out several times longer (`--input-len 64` sent 321-335
//! tokens to llama.cpp).
//!
//! [`Vocab`] is a list of words that are one token each to the server, with or without a
//! leading space, so that any space-separated sequence of n of them is n tokens (BPE
//! pre-tokenisers split on spaces, so no merge crosses a word). It is calibrated once per run
//! through the server's `/tokenize` endpoint (llama.cpp, vLLM, SGLang, the simulator) or a local
//! `--tokenizer`, from a built-in list of common English words; a final check tokenizes a long
//! random prompt and compares. How lengths were made is stored in the run's metadata
//! (`trace.client` `prompt_lengths`).

use futures_util::StreamExt;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use trace_client::{HfTokenizer, ServerApi};

use crate::Error;

/// How a run's prompt lengths were made exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptLengths {
    /// A local tokenizer.json (`--tokenizer`).
    Tokenizer,
    /// Calibrated through the server's `/tokenize`.
    TokenizeEndpoint,
    /// Whitespace words: exact only on a word-level vocabulary (the simulator's).
    Words,
}

impl PromptLengths {
    /// The value stored in the metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tokenizer => "tokenizer",
            Self::TokenizeEndpoint => "tokenize-endpoint",
            Self::Words => "words",
        }
    }
}

/// Common English words: in the BPE vocabularies of current models nearly all are one token,
/// with and without a leading space. Calibration keeps those that are.
const CANDIDATES: &str = "the of and to in is that for it as was with be by on not he this are \
or his from at which but have an they you were her she there been one all we their has would \
when if so no will more can out up who them some into time only new other could its two may \
then do first any my now such like our over man me even most made after also did many before \
must through back years where much your way well down should because each just those people \
how too little state good very make world still own see men work long get here between both \
life being under never day same another know while last might us great old year off come \
since against go came right used take three states himself few house use during without again \
place around however home small found thought went say part once general high upon school \
every don does got united left number course war until always away something fact though water \
less public put think almost hand enough far took head yet government system better set told \
nothing night end why called didn find going look asked later knew point next program city \
business give group toward young days let room president side social given present several \
order national possible rather second face per among form important often things looked early \
white case john become large big need four within felt children along saw best church ever \
least power development light thing seemed family interest want members mind country area \
others done turned although open god service problem certain kind different thus began door \
help means sense whole matter perhaps itself york times law human line above name example \
action company hands local show whether five history gave today either act feet across taken \
past quite anything seen having death week experience body word half really field am car words \
already themselves information tell together college shall money period held keep sure free \
seems real behind cannot miss political air question making office brought whose special major";

/// Words that are one token each to a server, for prompts of an exact length.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    words: Vec<String>,
}

/// Fewest calibrated words for a usable vocabulary.
const MIN_WORDS: usize = 64;
/// Length of the random prompt the final check tokenizes.
const CHECK_WORDS: usize = 512;

impl Vocab {
    /// Calibrates against the server's `/tokenize`.
    pub async fn from_server(api: &ServerApi) -> Result<Self, Error> {
        let words: Vec<&str> = CANDIDATES.split_whitespace().collect();
        let mut counts = Vec::with_capacity(words.len());
        // Two probes per word: alone (a prompt's first word) and after another word (" w").
        let probes = words
            .iter()
            .flat_map(|w| [w.to_string(), format!("{w} {w}")])
            .collect::<Vec<_>>();
        // A few at a time: llama-server answers on a small thread pool and closes what it
        // cannot take.
        let mut got =
            futures_util::stream::iter(probes.iter().map(|p| api.count_tokens(p))).buffered(8);
        while let Some(r) = got.next().await {
            counts.push(r?);
        }
        let vocab = Self::from_counts(&words, &counts)?;
        let check = vocab.check_text();
        let n = api.count_tokens(&check).await?;
        vocab.verified(n)
    }

    /// Calibrates against a local tokenizer.
    pub fn from_tokenizer(t: &HfTokenizer) -> Result<Self, Error> {
        let words: Vec<&str> = CANDIDATES.split_whitespace().collect();
        let mut counts = Vec::with_capacity(words.len() * 2);
        for w in &words {
            counts.push(t.count(w)?);
            counts.push(t.count(&format!("{w} {w}"))?);
        }
        let vocab = Self::from_counts(&words, &counts)?;
        let n = t.count(&vocab.check_text())?;
        vocab.verified(n)
    }

    /// Keeps the words whose probes (`w`, `w w`) count 1 and 2 tokens.
    fn from_counts(words: &[&str], counts: &[usize]) -> Result<Self, Error> {
        let words: Vec<String> = words
            .iter()
            .zip(counts.chunks(2))
            .filter(|(_, c)| c == &[1, 2])
            .map(|(w, _)| w.to_string())
            .collect();
        if words.len() < MIN_WORDS {
            return Err(Error::Config(format!(
                "cannot make prompts of exact lengths: only {} of the candidate words are one \
                 token each to this server's tokenizer (at least {MIN_WORDS} needed); give \
                 --tokenizer with the model's tokenizer.json",
                words.len()
            )));
        }
        Ok(Self { words })
    }

    fn check_text(&self) -> String {
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        self.random(&mut rng, 0, CHECK_WORDS as u32)
    }

    fn verified(self, counted: usize) -> Result<Self, Error> {
        if counted == CHECK_WORDS {
            Ok(self)
        } else {
            Err(Error::Config(format!(
                "cannot make prompts of exact lengths: a check prompt of {CHECK_WORDS} \
                 calibrated words is {counted} tokens to this server; give --tokenizer with the \
                 model's tokenizer.json"
            )))
        }
    }

    /// Words kept.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Never: calibration refuses a small vocabulary.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// A random prompt of exactly `tokens` tokens whose first words spell `unique` (in base
    /// [`Vocab::len`]), so no two items share a prefix (an engine's prefix cache would skip
    /// their prefill).
    pub fn random(&self, rng: &mut ChaCha8Rng, unique: u64, tokens: u32) -> String {
        let n = self.words.len() as u64;
        let mut out = String::with_capacity(tokens as usize * 7);
        let mut u = unique;
        for k in 0..tokens {
            let w = if k < 3 {
                let d = u % n;
                u /= n;
                d as usize
            } else {
                rng.random_range(0..self.words.len())
            };
            if k > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[w]);
        }
        out
    }

    /// A prompt of `tokens` tokens whose k-th block of `block` tokens depends only on
    /// `hash_ids[k]` (the last hash repeats), so requests sharing leading hashes share a
    /// prefix, as in the Mooncake/Bailian traces they come from.
    pub fn blocks(&self, hash_ids: &[u64], block: u32, tokens: u32) -> String {
        let mut out = String::with_capacity(tokens as usize * 7);
        let mut n = 0;
        let last = hash_ids.last().copied().unwrap_or(0);
        for h in hash_ids.iter().copied().chain(std::iter::repeat(last)) {
            let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(h);
            for _ in 0..block {
                if n == tokens {
                    return out;
                }
                if n > 0 {
                    out.push(' ');
                }
                out.push_str(&self.words[rng.random_range(0..self.words.len())]);
                n += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word_level() -> Vocab {
        let words: Vec<&str> = CANDIDATES.split_whitespace().collect();
        let counts: Vec<usize> = words.iter().flat_map(|_| [1, 2]).collect();
        Vocab::from_counts(&words, &counts).unwrap()
    }

    #[test]
    fn words_that_are_not_one_token_are_dropped_and_too_few_is_an_error() {
        let words = ["a", "b", "c"];
        let e = Vocab::from_counts(&words, &[1, 2, 2, 4, 1, 3]).unwrap_err();
        assert!(e.to_string().contains("--tokenizer"), "{e}");
        let v = word_level();
        assert!(v.len() >= 300, "{}", v.len());
        assert!(v.clone().verified(CHECK_WORDS).is_ok());
        assert!(v.verified(CHECK_WORDS + 3).is_err());
    }

    #[test]
    fn prompts_have_the_asked_length_and_unique_prefixes() {
        let v = word_level();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let a = v.random(&mut rng, 7, 100);
        let b = v.random(&mut rng, 8, 100);
        assert_eq!(a.split(' ').count(), 100);
        assert_ne!(a.split(' ').next(), b.split(' ').next());
        let x = v.blocks(&[1, 2], 16, 40);
        let y = v.blocks(&[1, 3], 16, 40);
        let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split(' ').collect(), y.split(' ').collect());
        assert_eq!((xs.len(), ys.len()), (40, 40));
        assert_eq!(xs[..16], ys[..16]);
        assert_ne!(xs[16..32], ys[16..32]);
    }
}
