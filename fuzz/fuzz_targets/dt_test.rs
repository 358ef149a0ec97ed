#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trackc_runtime::fuzzing::dt_test(data));
