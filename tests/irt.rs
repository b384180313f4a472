//! Tests of the psychometric core (`adaptive_engine::irt`), one binary with a module per
//! topic.

#[path = "irt/estimation.rs"]
mod estimation;
#[path = "irt/polytomous.rs"]
mod polytomous;
#[path = "irt/selection.rs"]
mod selection;
#[path = "irt/stopping.rs"]
mod stopping;
