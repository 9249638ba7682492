//! kmodkit: the command-line front end. It parses arguments and wires the
//! library crates together; all format knowledge lives in the libraries.

/// A diagnostic line on stderr. Unlike `eprintln!`, which panics when
/// stderr is a closed pipe (`kmodkit depmod 2>&1 | head -1`), a write that
/// fails is dropped: nobody is reading.
macro_rules! diag {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod abi;
mod add_drivers;
mod cli;
mod depmod;
mod host;
mod initrd;
mod man;
mod modinfo;
mod netboot;
mod package;
mod profile;
mod progress;
mod read_flags;
mod rebuild;
mod reload;
mod signing;
mod status;
mod weak_modules;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};

/// Exit codes: 0 success, 1 the operation failed, 2 usage error (clap's,
/// or a [`UsageError`] a command finds in its arguments).
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Arguments that cannot work together, found before any input is read.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    // Before any thread starts (they inherit the signal mask): Ctrl-C and
    // SIGTERM remove the temporaries of files being replaced.
    if let Err(e) = kmodkit_commit::cleanup_on_signals() {
        diag!("kmodkit: warning: cannot handle SIGINT/SIGTERM ({e}); an interrupted write may leave a temporary file, which the next run removes");
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let json = wants_json(&matches);
    match run(cli, &matches) {
        Ok(code) => ExitCode::from(code),
        // `kmodkit initrd ls IMG | head -1`: the reader had enough. A
        // closed pipe is a normal end of output, not a failure (ripgrep's
        // main does the same); Rust ignores SIGPIPE, so it arrives here.
        Err(e) if e.chain().any(is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&e, json);
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

/// Whether the command that runs was given `--json`.
fn wants_json(matches: &clap::ArgMatches) -> bool {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    matches!(m.try_get_one::<bool>("json"), Ok(Some(true)))
}

/// An error on stderr; with `--json` also as one JSON object on stdout
/// (`{"error": {"message": ..., "causes": [...]}}`), so a script reading
/// stdout gets a document either way.
/// Written with `writeln!`, not `eprintln!`/`println!`, which panic when
/// the stream is a closed pipe; nothing is left to tell if both are gone.
fn report_error(e: &anyhow::Error, json: bool) {
    let _ = writeln!(io::stderr().lock(), "kmodkit: error: {e:#}");
    if json {
        let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
        let doc = serde_json::json!({
            "error": { "message": e.to_string(), "causes": causes }
        });
        let _ = writeln!(io::stdout().lock(), "{doc}");
    }
}

/// Whether `e` is a write to a closed pipe, also where a library error or
/// an `io::Error` wrapper holds the OS error in a field rather than as
/// its `source()` (those are not visited by `anyhow::Error::chain`).
fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::BrokenPipe {
            return true;
        }
        if let Some(inner) = io.get_ref() {
            if is_broken_pipe(inner) {
                return true;
            }
        }
    }
    if let Some(json) = e.downcast_ref::<serde_json::Error>() {
        // serde_json's source() skips the io::Error it wraps.
        if json.io_error_kind() == Some(io::ErrorKind::BrokenPipe) {
            return true;
        }
    }
    match e.downcast_ref::<kmodkit_initramfs::Error>() {
        Some(kmodkit_initramfs::Error::Write { cause, .. }) if is_broken_pipe(cause) => {
            return true;
        }
        Some(kmodkit_initramfs::Error::Incomplete { cause, .. }) if is_broken_pipe(&**cause) => {
            return true;
        }
        _ => {}
    }
    if let Some(kmodkit_depmod::DepmodError::Io { cause, .. }) = e.downcast_ref() {
        if is_broken_pipe(cause) {
            return true;
        }
    }
    false
}

/// Runs a command; returns the exit code.
fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    let status = |ok: bool| if ok { 0 } else { EXIT_FAILURE };
    match cli.command {
        Command::Abi(cmd) => match abi::run(&cmd) {
            Ok(code) => Ok(code),
            Err(e) => {
                // abi check: 0 compatible, 1 incompatible, 2 could not decide.
                report_error(&e, wants_json(matches));
                Ok(2)
            }
        },
        Command::Modinfo(args) => {
            let sub = matches
                .subcommand_matches("modinfo")
                .expect("modinfo matches");
            modinfo::run(&args, modinfo_field(sub)).map(status)
        }
        Command::Depmod(args) => depmod::run(&args).map(status),
        Command::WeakModules(args) => weak_modules::run(&args).map(status),
        Command::Rebuild(args) => rebuild::run(&args).map(status),
        Command::SigningKey(cmd) => signing::run(&cmd).map(status),
        Command::Package(args) => package::run(&args).map(status),
        Command::Repo(args) => package::run_repo(&args).map(status),
        // 0 fine, 1 action needed / a step failed; errors: 2 for usage and
        // input (UsageError), 1 otherwise, as main maps them.
        Command::Status(args) => status::run(&args),
        Command::Reload(args) => reload::run(&args),
        Command::Netboot(args) => netboot::run(&args).map(status),
        Command::Initrd(args) => match initrd::run(&args) {
            Err(e) if initrd::is_diff(&args) => {
                report_error(&e, wants_json(matches));
                Ok(initrd::DIFF_TROUBLE)
            }
            r => r.map(status),
        },
        Command::Man { dir } => {
            let cmd = Cli::command();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    man::generate_to(cmd, &dir)
                        .with_context(|| format!("writing man pages into {}", dir.display()))?;
                }
                None => man::render_top(cmd, &mut std::io::stdout().lock())?,
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "kmodkit",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

/// kmod's modinfo lets the last of -a, -d, -l, -p, -n and -F win.
fn modinfo_field(m: &clap::ArgMatches) -> Option<String> {
    let fixed = [
        ("author", "author"),
        ("description", "description"),
        ("license", "license"),
        ("parameters", "parm"),
        ("filename", "filename"),
    ];
    let mut best: Option<(usize, String)> = None;
    let mut consider = |idx: Option<usize>, value: String| {
        if let Some(i) = idx {
            if best.as_ref().is_none_or(|(b, _)| i > *b) {
                best = Some((i, value));
            }
        }
    };
    for (id, field) in fixed {
        if m.get_flag(id) {
            consider(m.indices_of(id).and_then(|i| i.max()), field.to_string());
        }
    }
    if let Some(f) = m.get_one::<String>("field") {
        consider(m.indices_of("field").and_then(|i| i.max()), f.clone());
    }
    best.map(|(_, f)| f)
}
