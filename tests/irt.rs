//! Tests of the psychometric core (`adaptive_engine::irt`), one binary with a module per
//! topic.

#[path = "irt/calibration.rs"]
mod calibration;
#[path = "irt/estimation.rs"]
mod estimation;
#[path = "irt/fast_selection.rs"]
mod fast_selection;
#[path = "irt/polytomous.rs"]
mod polytomous;
#[path = "irt/reference.rs"]
mod reference;
#[path = "irt/selection.rs"]
mod selection;
#[path = "irt/stopping.rs"]
mod stopping;
