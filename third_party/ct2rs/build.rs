// Build script of the ct2rs fork: compiles the cxx bridges against the
// CTranslate2 4.8.4 headers and links one prebuilt `libctranslate2`.
//
// Upstream's `system` mode also asks for `cpu_features` and CUDA's static
// libraries. The official PyPI build has cpu_features inside the shared
// library and loads CUDA at run time, so those names are not needed here.
// Where the library lives is the business of the crate that depends on this
// one: it emits `cargo:rustc-link-search`, or sets CTRANSLATE2_LIB_DIR.
use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/sys");
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-env-changed=CTRANSLATE2_LIB_DIR");
    if let Ok(dir) = env::var("CTRANSLATE2_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
    }
    println!("cargo:rustc-link-lib=dylib=ctranslate2");

    cxx_build::bridges([
        "src/sys/types.rs",
        "src/sys/config.rs",
        "src/sys/model_memory_reader.rs",
        "src/sys/scoring.rs",
        "src/sys/storage_view.rs",
        "src/sys/whisper.rs",
    ])
    .file("src/sys/whisper.cpp")
    .include("CTranslate2/include")
    .std("c++17")
    .compile("ct2rs");
}
