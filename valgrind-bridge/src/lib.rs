//! `valgrind-bridge`: Valgrind client requests from Rust inline assembly. (Being written.)
#![no_std]
