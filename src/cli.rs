//! Command line: `serve`, `transcribe`, `models pull|list`, `cuda pull`, `loadtest`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::Transcript;

#[derive(Parser, Debug)]
#[command(name = "whisper-serve", version, about = "Whisper speech-to-text service on CTranslate2")]
pub struct Cli {
    /// Config file (else $WHISPER_SERVE_CONFIG, else ./config.json, else defaults).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service.
    Serve {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run the HTTP API only, handing jobs to workers over NATS JetStream.
    Gateway {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run a worker: load the model, take jobs from NATS JetStream; serves
    /// /health and /metrics on cluster.worker_port.
    Worker {
        #[arg(long)]
        host: Option<String>,
        /// The health/metrics port (default: cluster.worker_port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Look at the cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Transcribe files and print the text, without a server.
    Transcribe {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per file (text, segments, audio seconds, seconds taken).
        #[arg(long)]
        json: bool,
        /// Language code; default: the config's, else detected.
        #[arg(long)]
        language: Option<String>,
        /// Translate to English instead of transcribing.
        #[arg(long)]
        translate: bool,
        /// Add word timings (with --json).
        #[arg(long)]
        word_timestamps: bool,
        /// Decode only the speech the voice activity detector finds.
        #[arg(long)]
        vad_filter: bool,
        /// Text to condition the first window on.
        #[arg(long)]
        prompt: Option<String>,
    },
    /// Download or list models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// NVIDIA libraries for `model.device` cuda / auto.
    Cuda {
        #[command(subcommand)]
        command: CudaCommand,
    },
    /// Load-test a running server; prints a table, writes it with a chart to --out.
    Loadtest(crate::loadtest::Args),
}

#[derive(Subcommand, Debug)]
pub enum CudaCommand {
    /// Download cuBLAS 12 (PyPI's nvidia-cublas-cu12 wheel) into engine.cuda_dir,
    /// for machines with the NVIDIA driver but no CUDA toolkit.
    Pull {
        /// PEP 503 simple index (default: $PIP_INDEX_URL, else https://pypi.org/simple).
        #[arg(long, value_name = "URL")]
        index_url: Option<String>,
        /// Install exactly this 12.x version (default: the newest 12.x).
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Workers, pending jobs and dead letters, as a table (--json: as JSON).
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download a model (tiny, tiny.en, base, ..., large-v3, turbo) into model_dir.
    Pull { name: String },
    /// Show the models in model_dir.
    List,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok((config, _source)) => config,
        Err(e) => {
            eprintln!("whisper-serve: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists: threads pick their malloc arena at birth.
    crate::engine::reuse_freed_memory(config.engine.reuse_memory_mb as usize);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("whisper-serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, config));
    // A blocking read of stdin (see server::shutdown_signal) would keep a
    // plain runtime drop waiting forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<crate::loadtest::UsageError>().is_some() => {
            eprintln!("whisper-serve: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("whisper-serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the service's port. The test harness and scripts read the bound
/// address from the line printed here.
async fn bind(host: String, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    // Before logging: the subscriber takes its trace layer from it.
    let _traces = crate::telemetry::traces::init(&config.telemetry)?;
    let _log = crate::telemetry::logging::init(&config.logging)?;
    match command {
        Command::Serve { host, port } => {
            let listener = bind(host.unwrap_or(config.server.host.clone()), port.unwrap_or(config.server.port)).await?;
            crate::server::run(listener, config, crate::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Gateway { host, port } => {
            let listener = bind(host.unwrap_or(config.server.host.clone()), port.unwrap_or(config.server.port)).await?;
            crate::cluster::gateway::run(listener, config, crate::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Worker { host, port } => {
            let listener = bind(host.unwrap_or(config.server.host.clone()), port.unwrap_or(config.cluster.worker_port)).await?;
            crate::cluster::worker::run(listener, config, crate::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Cluster { command: ClusterCommand::Status { json } } => {
            let client = crate::cluster::connect(&config.cluster, "whisper-serve-status", false).await?;
            let bus = crate::cluster::Bus::setup(client, &config).await?;
            let status = crate::cluster::status::ClusterStatus::gather(&bus, &config.model.size).await;
            if json {
                println!("{}", serde_json::Value::Object(status.to_json()));
            } else {
                print!("{}", status.table(&config.model.size));
            }
            Ok(())
        }
        Command::Transcribe { files, json, language, translate, word_timestamps, vad_filter, prompt } => {
            crate::vad::init(&config.vad)?;
            let engine = crate::server::load_engine(&config).await?;
            let engine = std::sync::Arc::new(engine);
            let mut options = config.decoding.clone();
            options.language = language.or(options.language);
            options.initial_prompt = prompt.or(options.initial_prompt);
            options.word_timestamps |= word_timestamps;
            options.vad_filter |= vad_filter;
            if translate {
                options.task = crate::engine::Task::Translate;
            }
            let max_s = config.limits.max_audio_seconds;
            let mut failed = false;
            for file in files {
                let (engine, options, path) = (engine.clone(), options.clone(), file.clone());
                let result = tokio::task::spawn_blocking(move || -> anyhow::Result<(Transcript, f64)> {
                    let started = std::time::Instant::now();
                    let bytes = std::fs::read(&path)?;
                    let audio = crate::audio::decode(&bytes, max_s)?;
                    let transcript = engine.transcribe(audio, &options)?;
                    Ok((transcript, started.elapsed().as_secs_f64()))
                })
                .await?;
                match result {
                    Ok((t, seconds)) if json => {
                        let line = serde_json::json!({
                            "file": file, "text": t.text, "language": t.language,
                            "duration": t.duration, "seconds": seconds, "segments": t.segments,
                        });
                        println!("{line}");
                    }
                    Ok((t, _)) => println!("{}: {}", file.display(), t.text),
                    Err(e) => {
                        eprintln!("{}: error: {e}", file.display());
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some files failed");
            }
            Ok(())
        }
        Command::Loadtest(args) => crate::loadtest::run(args).await,
        Command::Cuda { command: CudaCommand::Pull { index_url, version } } => {
            let mut opts = crate::gpu::pull::PullOptions::from_env();
            if let Some(url) = index_url {
                opts.index_url = url;
            }
            opts.version = version;
            let cuda_dir = config.cuda_dir();
            let outcome = crate::gpu::pull::pull(&cuda_dir, &opts).await?;
            println!("{}", crate::gpu::pull::summary(&cuda_dir, &outcome));
            Ok(())
        }
        Command::Models { command } => match command {
            ModelsCommand::Pull { name } => {
                let mut opts = crate::models::PullOptions::from_env();
                opts.progress = true;
                let path = crate::models::pull(&name, &config.model.model_dir, &opts).await?;
                println!("{}", path.display());
                Ok(())
            }
            ModelsCommand::List => {
                for m in crate::models::list(&config.model.model_dir) {
                    let state = if m.complete { "" } else { " (incomplete)" };
                    println!("{}\t{:.1} MB\t{}{}", m.name, m.bytes as f64 / 1e6, m.path.display(), state);
                }
                Ok(())
            }
        },
    }
}
