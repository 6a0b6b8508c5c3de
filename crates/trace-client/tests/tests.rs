//! trace-client against scripted local servers: every engine quirk, split reads, tokenizers.

mod common;
mod keepalive;
mod split;
mod stream;
mod tokenizer;
