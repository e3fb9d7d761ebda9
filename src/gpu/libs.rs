//! Finding NVIDIA's libraries before CTranslate2 asks for them. It calls
//! `dlopen("libcublas.so.12")`, which searches `LD_LIBRARY_PATH` and the
//! system's library cache; a library already loaded under that soname is
//! reused. So each library is first asked for by name (system,
//! `LD_LIBRARY_PATH`), and if that fails, loaded by full path from
//! `engine.cuda_dir` (where `whisper-serve cuda pull` unpacks PyPI's
//! `nvidia-cublas-cu12`), after which CTranslate2's own dlopen finds it.
//! Every library is then checked for a symbol it must have, so a wrong file
//! under the right name is named as such. All problems are reported at once.

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};

/// A library CTranslate2 needs on CUDA, in load order (cuBLAS needs cuBLASLt).
#[derive(Debug, Clone, Copy)]
pub struct Needed {
    pub soname: &'static str,
    /// A function any right version has.
    pub symbol: &'static str,
    /// Whether `cuda pull` can provide it (the driver cannot be pulled).
    pub pullable: bool,
    pub what: &'static str,
}

pub const NEEDED: &[Needed] = &[
    Needed { soname: "libcuda.so.1", symbol: "cuInit", pullable: false, what: "the NVIDIA driver" },
    Needed { soname: "libcublasLt.so.12", symbol: "cublasLtCreate", pullable: true, what: "cuBLASLt 12" },
    Needed { soname: "libcublas.so.12", symbol: "cublasCreate_v2", pullable: true, what: "cuBLAS 12" },
];

/// What went wrong with one library.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Not on the system, not in `cuda_dir`.
    Missing { soname: &'static str, what: &'static str, pullable: bool, cuda_dir: PathBuf },
    /// Found, but the loader refused it.
    Unloadable { soname: &'static str, path: String, error: String },
    /// Loaded, but it is not the library its name says.
    Wrong { soname: &'static str, path: String, symbol: &'static str, what: &'static str },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { soname, what, pullable: false, .. } => write!(
                f,
                "{soname} ({what}) is not installed: install the NVIDIA driver (>= 525, for CUDA 12); in a container, run it with the NVIDIA container toolkit (docker run --gpus all)"
            ),
            Problem::Missing { soname, what, cuda_dir, .. } => write!(
                f,
                "{soname} ({what}) was found neither on the system (LD_LIBRARY_PATH, ldconfig) nor in {}: run `whisper-serve cuda pull`, or install cuBLAS 12 (the CUDA 12 runtime image or the libcublas-12 package)",
                cuda_dir.display()
            ),
            Problem::Unloadable { soname, path, error } => write!(f, "{soname} at {path} cannot be loaded: {error}"),
            Problem::Wrong { soname, path, symbol, what } => {
                write!(f, "{path} is not {what} (no `{symbol}` in it), though named {soname}: replace it, or run `whisper-serve cuda pull`")
            }
        }
    }
}

/// Every problem found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct LibsError(pub Vec<Problem>);

impl fmt::Display for LibsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CUDA libraries: ")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Where each library was loaded from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub soname: &'static str,
    /// `None`: found by the system's own search.
    pub path: Option<PathBuf>,
}

fn dlerror() -> String {
    // SAFETY: dlerror returns a thread-local message or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated, valid until the next dl* call.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// dlopen with RTLD_GLOBAL; the handle is kept for the life of the process
/// (CTranslate2 uses the library until exit).
fn open(name: &CStr) -> Result<*mut libc::c_void, String> {
    // SAFETY: a valid C string; the loader runs the library's initialisers,
    // which is what loading it later in CTranslate2 would do anyway.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        Err(dlerror())
    } else {
        Ok(h)
    }
}

fn has_symbol(handle: *mut libc::c_void, symbol: &str) -> bool {
    let Ok(sym) = CString::new(symbol) else { return false };
    // SAFETY: a live handle from dlopen and a valid C string.
    !unsafe { libc::dlsym(handle, sym.as_ptr()) }.is_null()
}

/// The file named `soname` under `dir`, a few levels deep (the wheels
/// unpack to `nvidia/cublas/lib/`).
pub fn find_in(dir: &Path, soname: &str) -> Option<PathBuf> {
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == soname) && p.is_file() {
                return Some(p);
            }
            if depth < 4 && p.is_dir() {
                stack.push((p, depth + 1));
            }
        }
    }
    None
}

/// Loads every library in [`NEEDED`]: by name first, else from `cuda_dir`.
pub fn load(cuda_dir: &Path) -> Result<Vec<Loaded>, LibsError> {
    load_from(NEEDED, cuda_dir)
}

pub fn load_from(needed: &[Needed], cuda_dir: &Path) -> Result<Vec<Loaded>, LibsError> {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for n in needed {
        let Ok(name) = CString::new(n.soname) else { continue };
        let (handle, path) = match open(&name) {
            Ok(h) => (h, None),
            Err(_) => match find_in(cuda_dir, n.soname).filter(|_| n.pullable) {
                None => {
                    problems.push(Problem::Missing { soname: n.soname, what: n.what, pullable: n.pullable, cuda_dir: cuda_dir.to_path_buf() });
                    continue;
                }
                Some(p) => {
                    let Ok(full) = CString::new(p.as_os_str().as_encoded_bytes()) else { continue };
                    match open(&full) {
                        Ok(h) => (h, Some(p)),
                        Err(error) => {
                            problems.push(Problem::Unloadable { soname: n.soname, path: p.display().to_string(), error });
                            continue;
                        }
                    }
                }
            },
        };
        if !has_symbol(handle, n.symbol) {
            let shown = path.as_ref().map_or_else(|| n.soname.to_string(), |p| p.display().to_string());
            problems.push(Problem::Wrong { soname: n.soname, path: shown, symbol: n.symbol, what: n.what });
            continue;
        }
        tracing::debug!(library = n.soname, path = ?path, "CUDA library loaded");
        loaded.push(Loaded { soname: n.soname, path });
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(LibsError(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needed(soname: &'static str, symbol: &'static str) -> Needed {
        Needed { soname, symbol, pullable: true, what: "a test library" }
    }

    #[test]
    fn missing_libraries_are_all_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = load_from(&[needed("libnot-here-1.so.12", "f"), needed("libnot-here-2.so.12", "g")], dir.path()).expect_err("missing");
        assert_eq!(e.0.len(), 2);
        let text = e.to_string();
        assert!(text.contains("libnot-here-1.so.12") && text.contains("libnot-here-2.so.12"), "{text}");
        assert!(text.contains("whisper-serve cuda pull"), "{text}");
        let driver = Problem::Missing { soname: "libcuda.so.1", what: "the NVIDIA driver", pullable: false, cuda_dir: dir.path().into() };
        assert!(driver.to_string().contains("install the NVIDIA driver"), "{driver}");
    }

    #[test]
    fn a_file_that_is_not_a_library_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let lib = dir.path().join("nvidia/cublas/lib");
        std::fs::create_dir_all(&lib).expect("mkdir");
        std::fs::write(lib.join("libfake-ws.so.12"), b"not an ELF file").expect("write");
        let e = load_from(&[needed("libfake-ws.so.12", "f")], dir.path()).expect_err("not loadable");
        assert!(matches!(&e.0[0], Problem::Unloadable { path, .. } if path.ends_with("nvidia/cublas/lib/libfake-ws.so.12")), "{e}");
        assert!(e.to_string().contains("cannot be loaded"), "{e}");
    }

    #[test]
    fn a_real_library_is_found_and_checked_for_its_symbol() {
        // libc is a real library: found by name, has `malloc`, lacks `cublasCreate_v2`.
        let dir = tempfile::tempdir().expect("tmp");
        let ok = load_from(&[needed("libc.so.6", "malloc")], dir.path()).expect("libc");
        assert_eq!(ok, vec![Loaded { soname: "libc.so.6", path: None }]);
        let e = load_from(&[needed("libc.so.6", "cublasCreate_v2")], dir.path()).expect_err("wrong");
        assert!(matches!(e.0[0], Problem::Wrong { .. }), "{e}");
        assert!(e.to_string().contains("no `cublasCreate_v2`"), "{e}");
    }
}
