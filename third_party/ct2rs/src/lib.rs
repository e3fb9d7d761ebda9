//! Low-level CTranslate2 bindings from ct2rs 0.10.3 (`ct2rs::sys`), unchanged
//! but for the generator/translator bindings, which whisper-serve does not use.
pub mod sys;
