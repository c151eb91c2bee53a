//! The `pprof-exporter` binary: parse flags, then run the daemon or `inspect`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use tokio::sync::watch;
use tracing::{error, info};

use pprof_exporter::aggregate::Limits;
use pprof_exporter::config::{
    Cli, Command, DaemonArgs, EXIT_USAGE, TargetFile, promoted_label_name,
};
use pprof_exporter::expose::{self, Hub, WebContext};
use pprof_exporter::probe::Prober;
use pprof_exporter::process::PidSource;
use pprof_exporter::scrape::{FetchConfig, Fetcher};
use pprof_exporter::target::{self, TargetConfig, TargetSnapshot};
use pprof_exporter::web::WebSecurity;
use pprof_exporter::{inspect, telemetry};

/// How long open connections may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("pprof-exporter: {msg}");
    ExitCode::from(EXIT_USAGE as u8)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans several lines (usage, hints); the first says it all.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return usage_error(&format!("{first} (see --help)"));
        }
    };
    match cli.command {
        Some(Command::Inspect(args)) => {
            let shown = inspect::report(&args, |report| {
                let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
                inspect::render_to(&mut out, report, args.format, args.top)
                    .and_then(|()| std::io::Write::flush(&mut out))
            });
            match shown {
                Ok(Ok(())) => ExitCode::SUCCESS,
                // A reader that went away (`| head`) is not a failure.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("pprof-exporter inspect: writing the report: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("pprof-exporter inspect: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => run_daemon(cli.daemon),
    }
}

/// Keeps glibc's allocator from holding on to memory the daemon has freed: its threads
/// share two arenas instead of growing up to eight per core, and buffers of 128 KiB or
/// more (profile bodies, encoded expositions) are always mapped on their own and
/// returned when freed, instead of being carved out of an arena once the allocator's
/// sliding threshold has grown past them. In a 10-minute run at 1 s scrapes of 10,000
/// goroutines this kept RSS about 2 MB lower and flatter (docs/performance.md). The
/// MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ environment variables still win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters, and runs before the runtime
    // starts any thread.
    unsafe {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// How often freed memory inside glibc's arenas is handed back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Hands free pages inside glibc's arenas back to the kernel every [`TRIM_EVERY`].
/// glibc only returns memory at the top of an arena on its own, so holes left between
/// live blocks by each cycle's short-lived buffers stay resident. Side by side on one
/// target at 1 s scrapes of 10,000 goroutines, this kept RSS 0.3–0.8 MB lower; it does
/// not stop the slow rise of 3–6 % over 10 minutes that runs with and without it both
/// show (docs/performance.md). One call walks the free lists of both arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
async fn trim_allocator() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // SAFETY: malloc_trim takes the arenas' own locks and only releases pages
        // that hold no allocation; it is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
async fn trim_allocator() {}

fn run_daemon(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        return usage_error(&e);
    }
    tune_allocator();
    if let Err(e) = telemetry::init(&args.log_level) {
        return usage_error(&e);
    }
    // Two worker threads: one connection writing a large exposition, or a thread
    // descheduled on a busy node, does not hold up the others (on 2 cores with 8
    // connections, /metrics p99 went from 2.9 to 2.1 ms and throughput from 22k to 37k
    // req/s); RSS stayed at 10 MB. Decoding still runs on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(daemon(args))
}

async fn daemon(args: DaemonArgs) -> ExitCode {
    let target_file = match &args.target_config_file {
        Some(path) => match TargetFile::load(path) {
            Ok(f) => f,
            Err(e) => return usage_error(&e),
        },
        None => TargetFile::default(),
    };
    let targets = match args.resolve_targets(&target_file) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let security = match &args.web_config_file {
        Some(path) => match WebSecurity::load(path) {
            Ok(s) => s,
            Err(e) => return usage_error(&e),
        },
        None => WebSecurity::default(),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(address = %args.listen, error = %e, "cannot listen");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    let fetch_config = FetchConfig {
        timeout: args.scrape_timeout,
        max_body_bytes: args.max_body_bytes,
    };
    let promoted_label_names: Vec<&'static str> = args
        .goroutine_labels
        .iter()
        // Label names must be 'static for the output model; they are leaked once, at
        // start-up, and there are only as many as flags given.
        .map(|k| &*Box::leak(promoted_label_name(k).into_boxed_str()))
        .collect();
    let target_config = |url: &url::Url| TargetConfig {
        url: url.clone(),
        path_prefix: args.path_prefix.clone(),
        heap_gc: args.heap_gc,
        interval: args.scrape_interval,
        target_budget: args.target_budget,
        limits: Limits {
            top: args.top.get(),
            stack_text: args.stack_text_bytes.get(),
        },
        max_decompressed_bytes: args.max_decompressed_bytes,
        promoted_labels: args.goroutine_labels.clone(),
        promoted_label_names: promoted_label_names.clone(),
        leak_interval: args.leak_interval.0,
        states_interval: args.states_interval.0,
        states_max: args.states_max,
        memstats_interval: args.memstats_interval.0,
        process: match (&args.pid, &args.pid_file) {
            (Some(pid), _) => Some(PidSource::Pid(*pid)),
            (None, Some(path)) => Some(PidSource::PidFile(path.clone())),
            (None, None) => TargetConfig::local_pid_source(url),
        },
        smaps_interval: args.smaps_interval.0,
        proc_root: args.proc_root.clone(),
    };
    let mut configs: Vec<Arc<TargetConfig>> = Vec::new();
    let mut fetchers: Vec<Fetcher> = Vec::new();
    for t in &targets {
        match Fetcher::with_settings(fetch_config.clone(), t.http.clone()) {
            Ok(f) => fetchers.push(f),
            Err(e) => {
                error!(target = %t.url, error = %e, "cannot build the HTTP client");
                return ExitCode::from(EXIT_USAGE as u8);
            }
        }
        configs.push(Arc::new(target_config(&t.url)));
    }
    let prober = if args.probe_allow.is_empty() {
        None
    } else {
        let fetcher = match Fetcher::with_settings(fetch_config.clone(), target_file.probe.clone())
        {
            Ok(f) => f,
            Err(e) => {
                error!(error = %e, "cannot build the HTTP client for probes");
                return ExitCode::from(EXIT_USAGE as u8);
            }
        };
        let template = target_config(&url::Url::parse("http://probe.invalid").expect("static URL"));
        let allow: Vec<&str> = args.probe_allow.iter().map(|a| a.source.as_str()).collect();
        info!(allow = ?allow, cache_ttl = ?args.probe_cache_ttl, "fleet mode: /probe enabled");
        Some(Arc::new(Prober::new(
            args.probe_allow.clone(),
            template,
            fetcher,
            args.probe_cache_ttl,
            args.probe_max_targets.get(),
        )))
    };
    let snapshots: Vec<Arc<Mutex<TargetSnapshot>>> = configs
        .iter()
        .map(|c| Arc::new(Mutex::new(TargetSnapshot::new(c.label(), &c.kinds()))))
        .collect();
    let hub = Arc::new(Hub::new(snapshots.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut tasks = Vec::new();
    for ((cfg, snap), fetcher) in configs.into_iter().zip(snapshots).zip(fetchers) {
        let profiles: Vec<&str> = cfg.kinds().iter().map(|k| k.label()).collect();
        info!(target = %cfg.label(), interval = ?cfg.interval, profiles = ?profiles, "scraping");
        tasks.push(tokio::spawn(target::run(
            cfg,
            fetcher,
            snap,
            hub.clone(),
            stop_rx.clone(),
        )));
    }
    let address = listener
        .local_addr()
        .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    info!(address = %address, tls = security.tls.is_some(), basic_auth = security.auth.is_some(), "serving");
    if let Some(p) = &prober {
        hub.set_prober(p.clone());
    }
    let ctx = WebContext {
        hub,
        prober,
        security,
    };
    let refresher = tokio::spawn(ctx.hub.clone().run_refresher(stop_rx.clone()));
    let trimmer = tokio::spawn(trim_allocator());
    let server = tokio::spawn(expose::serve(listener, ctx, stop_rx, DRAIN));

    wait_for_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        // A scrape in flight is bounded by --scrape.timeout; don't wait for it.
        t.abort();
    }
    let _ = server.await;
    refresher.abort();
    trimmer.abort();
    info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
