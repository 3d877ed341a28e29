//! WASI preview1 host functions. (Stub surface.)
