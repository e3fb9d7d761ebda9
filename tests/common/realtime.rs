//! Realtime test parts shared by the realtime, limits, cluster and models
//! tests: jfk as the realtime API's raw audio, tests/support/realtime_check.py
//! (the official SDK) and tests/support/realtime_abuse.py.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{jfk_wav, python, repo, run_limited, speech, tool, ScriptRun, Server};

/// jfk.flac as raw pcm16 LE mono at 24 kHz (the realtime API's `audio/pcm`).
pub fn jfk_pcm24(dir: &Path) -> PathBuf {
    let out = dir.join("jfk24k.raw");
    let flac = speech().join("jfk_openai_whisper/jfk.flac");
    tool("sox", &[flac.to_str().unwrap(), "-r", "24000", "-b", "16", "-c", "1", "-e", "signed-integer", "-t", "raw", out.to_str().unwrap()]);
    out
}

/// One SDK scenario streams 11 s of speech at real time and waits for its
/// turns (~15 s; its own waits allow a loaded host minutes); past this,
/// something hangs.
pub const CHECK_LIMIT: Duration = Duration::from_secs(300);

/// Runs realtime_check.py SCENARIO against `server` with jfk.wav, killed
/// after `CHECK_LIMIT`.
pub fn check(server: &Server, scenario: &str, extra: &[&str]) -> ScriptRun {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/support/realtime_check.py")).arg(scenario).arg(format!("{}/v1", server.url)).arg(jfk_wav()).args(extra);
    let run = run_limited(cmd, CHECK_LIMIT);
    eprintln!("realtime_check.py {scenario}: {} in {:.1}s\n{}", if run.ok { "ok" } else { "FAILED" }, run.elapsed.as_secs_f64(), run.stdout.trim());
    run
}

/// Runs realtime_abuse.py SCENARIO against `url` (killed after `limit`);
/// its JSON report, or a failure with all it printed.
pub fn abuse(scenario: &str, url: &str, args: &[&str], limit: Duration) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/support/realtime_abuse.py")).arg(scenario).args(["--url", url]).args(args);
    let run = run_limited(cmd, limit);
    eprintln!("realtime_abuse.py {scenario} ({:.1}s): {}", run.elapsed.as_secs_f64(), run.stdout.trim());
    match run.report() {
        r if !run.killed && r.is_object() && r.get("script_error").is_none() => r,
        _ => panic!("realtime_abuse.py {scenario} gave no usable report\n--- stdout\n{}\n--- stderr\n{}", run.stdout, run.stderr),
    }
}
