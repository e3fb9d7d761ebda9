fn main() -> std::process::ExitCode {
    whisper_serve::cli::main()
}
