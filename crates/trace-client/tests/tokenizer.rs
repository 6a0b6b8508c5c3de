//! The project's test tokenizer (traces/tokenizer.json) and exact-length random prompts.
//! Regenerate the file with `cargo test -p trace-client --test tests -- --ignored regen_tokenizer`.

use std::path::PathBuf;

use rand::SeedableRng;
use trace_client::{HfTokenizer, random_prompt, word_level_tokenizer_json};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../traces/tokenizer.json")
}

#[test]
#[ignore = "writes traces/tokenizer.json"]
fn regen_tokenizer() {
    let json = word_level_tokenizer_json(4096);
    std::fs::write(path(), serde_json::to_string(&json).unwrap() + "\n").unwrap();
}

#[test]
fn committed_tokenizer_matches_generator() {
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    assert_eq!(on_disk, word_level_tokenizer_json(4096));
}

#[test]
fn random_prompt_has_exact_length_and_is_seeded() {
    let t = HfTokenizer::load(&path()).unwrap();
    assert_eq!(t.count("w0 w4095 w17").unwrap(), 3);
    for n in [0usize, 1, 7, 1024] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let (text, k) = random_prompt(&t, n, &mut rng).unwrap();
        assert_eq!(k as usize, n);
        assert_eq!(t.count(&text).unwrap(), n);
        let mut rng2 = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        assert_eq!(random_prompt(&t, n, &mut rng2).unwrap().0, text);
    }
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let err = HfTokenizer::load(std::path::Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}
