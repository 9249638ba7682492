//! Man pages from the one command-line definition. clap_mangen renders
//! the sections; kmodkit renders `after_help` itself, so that example
//! commands (lines indented by two spaces) stay on one line, unfilled and
//! unhyphenated (`.nf`), with every `-` a real hyphen-minus (`\-`), and
//! paragraphs stay paragraphs. The `help` subcommand gets no page and no
//! reference: `kmodkit help X` is `kmodkit X --help`.

use std::io::{self, Write};
use std::path::Path;

/// `cmd` and its subcommands without clap's `help` subcommand.
fn without_help(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help)
}

/// Escapes text for roff: backslashes, hyphens, and a leading control
/// character.
fn roff_escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// `after_help` as roff: example lines in no-fill blocks, the rest as
/// paragraphs.
fn render_after_help(text: &str, out: &mut dyn Write) -> io::Result<()> {
    let mut in_example = false;
    for line in text.lines() {
        if let Some(example) = line.strip_prefix("  ") {
            if !in_example {
                writeln!(out, ".RS 2\n.nf")?;
                in_example = true;
            }
            writeln!(out, "{}", roff_escape(example))?;
            continue;
        }
        if in_example {
            writeln!(out, ".fi\n.RE")?;
            in_example = false;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(status) = line.strip_prefix("Exit status: ") {
            writeln!(out, ".SH \"EXIT STATUS\"\n{}", roff_escape(status))?;
        } else if let Some(heading) = line.strip_suffix(':').filter(|h| !h.contains(' ')) {
            writeln!(out, ".SH {}", roff_escape(&heading.to_uppercase()))?;
        } else {
            writeln!(out, ".PP\n{}", roff_escape(line))?;
        }
    }
    if in_example {
        writeln!(out, ".fi\n.RE")?;
    }
    Ok(())
}

/// One page: clap_mangen's sections, kmodkit's `after_help`.
pub fn render(cmd: &clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        render_after_help(&after.to_string(), out)?;
    }
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// The top-level page of `cmd`.
pub fn render_top(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = without_help(cmd);
    cmd.build();
    render(&cmd, out)
}

/// One page per command into `dir`, named as clap_mangen names them
/// (`kmodkit-initrd-add-drivers.1`).
pub fn generate_to(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    let mut cmd = without_help(cmd);
    cmd.build();
    write_pages(&cmd, dir)
}

fn write_pages(cmd: &clap::Command, dir: &Path) -> io::Result<()> {
    // After build(), a subcommand's display name is its whole path
    // (kmodkit-initrd-add-drivers), which clap_mangen uses for the title
    // and the references.
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    // A page replaced in /usr/share/man/man1 is never seen half written.
    let mut page = Vec::new();
    render(cmd, &mut page)?;
    kmodkit_commit::replace_file(&dir.join(format!("{name}.1")), &page, None)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_unfilled_and_hyphens_escaped() {
        let mut out = Vec::new();
        render_after_help(
            "Exit status: 0 ok.\n\nExamples:\n  kmodkit initrd add-drivers --net dhcp img mlx4_en",
            &mut out,
        )
        .unwrap();
        let roff = String::from_utf8(out).unwrap();
        assert_eq!(
            roff,
            ".SH \"EXIT STATUS\"\n0 ok.\n.SH EXAMPLES\n.RS 2\n.nf\nkmodkit initrd add\\-drivers \\-\\-net dhcp img mlx4_en\n.fi\n.RE\n"
        );
    }
}

#[cfg(test)]
mod command_tests {
    use clap::CommandFactory;

    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        let name = format!("{path} {}", cmd.get_name()).trim().to_string();
        if cmd.get_subcommands().next().is_none() {
            out.push((name, cmd.clone()));
        } else {
            for s in cmd.get_subcommands() {
                leaves(s, name.clone(), out);
            }
        }
    }

    /// Every page a page refers to (`\fBkmodkit\-X\fR(1)`) is generated.
    #[test]
    fn every_referenced_page_exists() {
        let dir = tempfile::tempdir().unwrap();
        super::generate_to(crate::cli::Cli::command(), dir.path()).unwrap();
        let mut pages = 0;
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            pages += 1;
            for (i, _) in text.match_indices("(1)") {
                let before = &text[..i];
                let start = before.rfind("kmodkit").unwrap_or(i);
                let name: String = before[start..]
                    .replace("\\-", "-")
                    .replace("\\fR", "")
                    .replace("\\fB", "");
                if name.starts_with("kmodkit") && !name.contains(' ') {
                    assert!(
                        dir.path().join(format!("{name}.1")).is_file(),
                        "{name}(1) is referenced but not generated"
                    );
                }
            }
        }
        assert!(pages > 10, "{pages} pages");
    }

    /// Every command a user runs teaches: each positional argument is
    /// described and the help ends with examples.
    #[test]
    fn every_command_describes_its_arguments_and_has_examples() {
        let mut cmd = super::without_help(crate::cli::Cli::command());
        cmd.build();
        let mut all = Vec::new();
        leaves(&cmd, String::new(), &mut all);
        let mut missing = Vec::new();
        for (name, c) in &all {
            for a in c.get_positionals() {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!(
                        "{name}: argument {} has no description",
                        a.get_id()
                    ));
                }
            }
            let after = c
                .get_after_long_help()
                .or(c.get_after_help())
                .map(|s| s.to_string())
                .unwrap_or_default();
            if !matches!(name.as_str(), "kmodkit man" | "kmodkit completions")
                && !after.contains("Examples:\n  ")
            {
                missing.push(format!("{name}: no examples"));
            }
            // An example line fits 80 columns with --help's indentation,
            // so clap never wraps a command (longer ones continue with \).
            for l in after.lines().filter(|l| l.starts_with("  ")) {
                if l.len() > 78 {
                    missing.push(format!("{name}: example line of {} columns: {l}", l.len()));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
