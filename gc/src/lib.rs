//! `gc`: vmrun's garbage-collected heap. (Being written; see the crate's design comment when it lands.)
