//! Fuzzes the bank file parser of `import-bank` and `simulate`, then the bank validation
//! the server applies: any input must give items or a clear error, never a panic.
#![no_main]

use adaptive_engine::{bank_file, exam};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = bank_file::parse(data) {
        let bank = exam::NewBank {
            name: "fuzz".into(),
            scaling_constant: 1.0,
            items,
        };
        let _ = exam::validate_bank(&bank);
    }
});
