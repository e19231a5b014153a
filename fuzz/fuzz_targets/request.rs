//! Fuzzes the tunnel request decoder: it must never panic, never claim
//! more bytes than it was given or than a request can have, and every
//! request it accepts must re-encode to exactly the bytes it consumed, with
//! every shorter prefix reported as incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_tunnel::wire::{MAX_REQUEST_LEN, Request};

fuzz_target!(|data: &[u8]| {
    match Request::decode(data) {
        Ok(Some((request, used))) => {
            assert!(used <= data.len() && used <= MAX_REQUEST_LEN);
            let encoded = request.encode().expect("a decoded request is valid");
            assert_eq!(&encoded[..], &data[..used]);
            for cut in 0..used {
                assert_eq!(Request::decode(&data[..cut]), Ok(None));
            }
        }
        Ok(None) => assert!(data.len() < MAX_REQUEST_LEN),
        Err(_) => {}
    }
});
