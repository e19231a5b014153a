//! Links the proxy with packed relative relocations (DT_RELR, glibc 2.36+,
//! binutils 2.38+): a position-independent Rust binary otherwise carries
//! about a megabyte of RELA entries that the loader reads at every start
//! and that stay resident (bench/README.md, "Memory"). ASLR is kept.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
