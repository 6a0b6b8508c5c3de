//! trace-format: round trips through the writer and reader, and every refused file.

mod malformed;
mod roundtrip;
