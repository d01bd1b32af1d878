//! DC (data controller) jobs: what goes to KERIS.

pub mod achievement_levels;
