//! trace-client against scripted local servers: every engine quirk, split reads, tokenizers.

mod common;
mod split;
mod stream;
mod tokenizer;
