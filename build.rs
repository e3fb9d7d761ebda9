// Fetches the official libctranslate2 from PyPI's `ctranslate2` wheel, links
// it and places it beside the binaries (rpath $ORIGIN), with the `wheel`
// feature (the default). See third_party/ct2rs/README.md for why.
//
// CTRANSLATE2_LIB_DIR=<dir> uses a library already there instead (it must be
// CTranslate2 4.8.4: the bindings are compiled against its headers).
//
// Also, whatever the features: fetches Silero VAD v6 from PyPI's
// faster-whisper 1.2.1 wheel, checks it against a pinned sha256, caches it
// beside the CTranslate2 library and leaves it in OUT_DIR, where
// src/vad/silero.rs compiles it into the binary. WHISPER_SERVE_SILERO_VAD=<file>
// takes that file instead (offline builds; it must be the same model).

#[path = "src/pypi_index.rs"]
#[allow(dead_code)]
mod pypi_index;

use std::env;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Must match the headers in third_party/ct2rs/CTranslate2/include.
const CT2_VERSION: &str = "4.8.4";
/// The faster-whisper release whose VAD model and feeding src/vad mirrors.
const FW_VERSION: &str = "1.2.1";
const SILERO_IN_WHEEL: &str = "faster_whisper/assets/silero_vad_v6.onnx";
const SILERO_FILE: &str = "silero_vad_v6.onnx";
/// sha256 of SILERO_IN_WHEEL in the faster-whisper 1.2.1 wheel.
const SILERO_SHA256: &str = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/pypi_index.rs");
    println!("cargo:rerun-if-env-changed=CTRANSLATE2_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PIP_INDEX_URL");
    println!("cargo:rerun-if-env-changed=WHISPER_SERVE_SILERO_VAD");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out_dir.ancestors().nth(3).expect("OUT_DIR layout").to_path_buf();
    silero_vad(&out_dir, &profile_dir);
    if env::var_os("CARGO_FEATURE_WHEEL").is_none() {
        return;
    }

    let lib_dir = match env::var("CTRANSLATE2_LIB_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            let cache = profile_dir
                .parent()
                .unwrap_or(&profile_dir)
                .join(format!("ctranslate2-{CT2_VERSION}"));
            if !cache.join("libctranslate2.so").exists() {
                if let Err(e) = fetch_wheel_libs(&cache) {
                    panic!(
                        "could not fetch libctranslate2 from the ctranslate2=={CT2_VERSION} wheel: {e}\n\
                         Set CTRANSLATE2_LIB_DIR to a folder with libctranslate2.so {CT2_VERSION}, \
                         or build with --no-default-features --features source-build"
                    );
                }
            }
            cache
        }
    };
    println!("cargo:rustc-link-search=native={}", lib_dir.display());

    // Ship the libraries beside the binaries: the server runs from
    // target/<profile>/, test binaries from target/<profile>/deps/.
    for entry in fs::read_dir(&lib_dir).expect("library folder").flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(".so.") && entry.path().is_file() {
            copy_if_changed(&entry.path(), &profile_dir.join(&*name));
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:$ORIGIN/..");
}

fn fetch_wheel_libs(dest: &Path) -> Result<(), String> {
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64",
        Ok("aarch64") => "aarch64",
        other => return Err(format!("no ctranslate2 wheel for target arch {other:?}")),
    };
    let page = pypi_index::project_url(&pypi_index::index_url(), "ctranslate2");
    let html = http_get(&page)?;
    let html = String::from_utf8_lossy(&html);
    let links = pypi_index::parse_links(&html, &page);
    let wheel = pypi_index::pick_wheel(&links, "ctranslate2", CT2_VERSION, &["manylinux", arch])
        .ok_or_else(|| format!("{page} lists no manylinux {arch} wheel of {CT2_VERSION}"))?;
    println!("cargo:warning=fetching {}", wheel.filename);
    let bytes = http_get(&wheel.url)?;
    if let Some(expected) = &wheel.sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if &actual != expected {
            return Err(format!("sha256 mismatch for {}: {actual} != {expected}", wheel.filename));
        }
    }
    let tmp = dest.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let mut main_lib = None;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = file.name().strip_prefix("ctranslate2.libs/").map(str::to_string) else {
            continue;
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| e.to_string())?;
        fs::write(tmp.join(&name), data).map_err(|e| e.to_string())?;
        if name.starts_with("libctranslate2") {
            main_lib = Some(name);
        }
    }
    let main_lib = main_lib.ok_or("the wheel has no ctranslate2.libs/libctranslate2*")?;
    std::os::unix::fs::symlink(&main_lib, tmp.join("libctranslate2.so"))
        .map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest).map_err(|e| e.to_string())
}

/// Leaves the checked Silero VAD model in OUT_DIR for `include_bytes!`.
fn silero_vad(out_dir: &Path, profile_dir: &Path) {
    let source = match env::var_os("WHISPER_SERVE_SILERO_VAD") {
        Some(file) => PathBuf::from(file),
        None => {
            let cache = profile_dir
                .parent()
                .unwrap_or(profile_dir)
                .join(format!("faster-whisper-{FW_VERSION}"))
                .join(SILERO_FILE);
            let cached = fs::read(&cache).map(|b| sha256(&b) == SILERO_SHA256).unwrap_or(false);
            if !cached {
                if let Err(e) = fetch_silero(&cache) {
                    panic!(
                        "could not fetch {SILERO_IN_WHEEL} from the faster-whisper=={FW_VERSION} wheel: {e}\n\
                         Set WHISPER_SERVE_SILERO_VAD to that file (sha256 {SILERO_SHA256})"
                    );
                }
            }
            cache
        }
    };
    let bytes = fs::read(&source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let actual = sha256(&bytes);
    if actual != SILERO_SHA256 {
        panic!("{}: sha256 {actual}, expected {SILERO_SHA256} (faster-whisper {FW_VERSION}'s {SILERO_FILE})", source.display());
    }
    let dest = out_dir.join(SILERO_FILE);
    if fs::read(&dest).map(|b| b != bytes).unwrap_or(true) {
        fs::write(&dest, &bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
    }
}

fn fetch_silero(dest: &Path) -> Result<(), String> {
    let page = pypi_index::project_url(&pypi_index::index_url(), "faster-whisper");
    let html = http_get(&page)?;
    let html = String::from_utf8_lossy(&html);
    let links = pypi_index::parse_links(&html, &page);
    let wheel = pypi_index::pick_wheel(&links, "faster-whisper", FW_VERSION, &["py3-none-any"])
        .ok_or_else(|| format!("{page} lists no py3-none-any wheel of {FW_VERSION}"))?;
    println!("cargo:warning=fetching {}", wheel.filename);
    let bytes = http_get(&wheel.url)?;
    if let Some(expected) = &wheel.sha256 {
        let actual = sha256(&bytes);
        if &actual != expected {
            return Err(format!("sha256 mismatch for {}: {actual} != {expected}", wheel.filename));
        }
    }
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let mut file = archive
        .by_name(SILERO_IN_WHEEL)
        .map_err(|e| format!("{}: {SILERO_IN_WHEEL}: {e}", wheel.filename))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(|e| e.to_string())?;
    let actual = sha256(&data);
    if actual != SILERO_SHA256 {
        return Err(format!("{SILERO_IN_WHEEL} in {}: sha256 {actual}, expected {SILERO_SHA256}", wheel.filename));
    }
    let dir = dest.parent().ok_or("no cache folder")?;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp = dest.with_extension("partial");
    fs::write(&tmp, &data).map_err(|e| e.to_string())?;
    fs::rename(&tmp, dest).map_err(|e| e.to_string())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn http_get(url: &str) -> Result<Vec<u8>, String> {
    let resp = ureq::get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok(body)
}

fn copy_if_changed(src: &Path, dst: &Path) {
    let same = match (fs::metadata(src), fs::metadata(dst)) {
        (Ok(a), Ok(b)) => a.len() == b.len(),
        _ => false,
    };
    if !same {
        let tmp = dst.with_extension("tmp");
        fs::copy(src, &tmp).expect("copy libctranslate2 beside the binaries");
        fs::rename(&tmp, dst).expect("copy libctranslate2 beside the binaries");
    }
}
