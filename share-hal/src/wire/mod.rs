//! Wire formats: bounds-checked views over private copies of peer-written
//! bytes, with byte layouts in `docs/protocol.md`.
