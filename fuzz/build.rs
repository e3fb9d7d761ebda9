// whisper-serve's build script puts libctranslate2 beside the binaries but
// its rpath link argument only applies to that package's own binaries:
// give the fuzz targets the same, so they run without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN:$ORIGIN/..");
}
