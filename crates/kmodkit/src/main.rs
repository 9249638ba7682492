//! kmodkit: the command-line front end. It parses arguments and wires the
//! library crates together; all format knowledge lives in the libraries.

mod abi;
mod add_drivers;
mod cli;
mod depmod;
mod initrd;
mod modinfo;
mod weak_modules;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};

/// Exit codes: 0 success, 1 the operation failed, 2 usage error (clap).
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kmodkit: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Runs a command; returns the exit code.
fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    let status = |ok: bool| if ok { 0 } else { EXIT_FAILURE };
    match cli.command {
        Command::Abi(cmd) => match abi::run(&cmd) {
            Ok(code) => Ok(code),
            Err(e) => {
                // abi check: 0 compatible, 1 incompatible, 2 could not decide.
                eprintln!("kmodkit: error: {e:#}");
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
        Command::Initrd(args) => match initrd::run(&args) {
            Err(e) if initrd::is_diff(&args) => {
                eprintln!("kmodkit: error: {e:#}");
                Ok(initrd::DIFF_TROUBLE)
            }
            r => r.map(status),
        },
        Command::Man { dir } => {
            let cmd = Cli::command();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    clap_mangen::generate_to(cmd, &dir)?;
                }
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
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
