//! Fuzzes the status decoder: every byte is a status, a refusal never
//! decodes as OK, and decoding then encoding gives the byte back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_tunnel::wire::Status;

fuzz_target!(|data: &[u8]| {
    match Status::decode(data) {
        None => assert!(data.is_empty()),
        Some((status, used)) => {
            assert_eq!(used, 1);
            assert_eq!(status == Status::Ok, data[0] == 0);
            assert_eq!(status.encode(), [data[0]]);
        }
    }
});
