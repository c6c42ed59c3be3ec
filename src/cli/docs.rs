//! `pcp completions SHELL` and `pcp man [COMMAND]`: the shell completion scripts and manual
//! pages, generated from the argument definitions themselves so they never drift from them.
//! No network, no node.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, VERSION};
use crate::error::{Error, Result};

/// The commands that have a manual page of their own (checked against the parser in a test).
const COMMANDS: [&str; 6] = ["send", "receive", "mount", "node", "completions", "man"];

#[derive(Args, Debug)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for. Bash: save as
    /// /usr/share/bash-completion/completions/pcp; zsh: as _pcp in a folder of $fpath; fish:
    /// as ~/.config/fish/completions/pcp.fish.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args, Debug)]
pub(super) struct ManArgs {
    /// Print the page of this command (pcp-COMMAND(1)) instead of pcp(1).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(COMMANDS))]
    command: Option<String>,
}

/// Writes `bytes` to stdout; a reader that went away early (`pcp man | head`) is no error.
fn print(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}

pub(super) fn completions(a: CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "pcp", &mut script);
    print(&script)
}

/// The manual page of `pcp` or of one of its commands, in roff.
fn page(command: Option<&str>) -> Result<Vec<u8>> {
    // `pcp help` has no page of its own: leave it out of the list of commands.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    if let Some(name) = command {
        cmd = cmd
            .find_subcommand(name)
            .cloned()
            .expect("COMMANDS lists only commands (tested)");
    }
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd)
        .date(env!("PCP_BUILD_DATE"))
        .source(format!("pcp {VERSION}"))
        .manual("pcp manual")
        .render(&mut roff)
        .map_err(|e| Error::io("cannot render the manual page", e))?;
    Ok(title_first(&String::from_utf8_lossy(&roff)).into_bytes())
}

/// Moves the `.TH` line to the top: the roff crate puts a two-line apostrophe definition
/// before it, and man pages (and tools that sniff them) conventionally open with `.TH`.
fn title_first(roff: &str) -> String {
    let Some(th) = roff.lines().find(|l| l.starts_with(".TH ")) else {
        return roff.to_string();
    };
    let mut out = format!("{th}\n");
    for l in roff.lines().filter(|l| *l != th) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

pub(super) fn man(a: ManArgs) -> Result<()> {
    print(&page(a.command.as_deref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_page_and_every_page_a_command() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd
            .get_subcommands()
            .map(|s| s.get_name())
            .filter(|n| *n != "help")
            .collect();
        assert_eq!(names, COMMANDS);
        for c in COMMANDS {
            let roff = String::from_utf8(page(Some(c)).unwrap()).unwrap();
            assert!(roff.starts_with(&format!(".TH pcp-{c} 1 ")), "{roff}");
            assert_eq!(roff.matches(".TH ").count(), 1, "{roff}");
        }
    }
}
