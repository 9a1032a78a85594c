//! `backhaul package-files DIR` (hidden): shell completions and man pages generated from the
//! same clap tree the binary parses, including the `netplan` and `lab` trees that their crates
//! own, so neither can drift from the options. scripts/build-deb runs it on the binary it
//! packages.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::{Cli, PackageFilesArgs};

/// Entry point.
pub fn main(args: PackageFilesArgs) -> anyhow::Result<ExitCode> {
    let completions = args.out_dir.join("completions");
    let man = args.out_dir.join("man");
    for dir in [&completions, &man] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut out = std::io::stdout().lock();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut visible(), "backhaul", &completions)
            .with_context(|| {
                format!("writing {shell} completions into {}", completions.display())
            })?;
        writeln!(out, "{}", path.display())?;
    }
    // One page per command, as git does (backhaul-netplan-apply(1)); hidden commands and the
    // implicit `help` get none.
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    list(&mut out, &man)?;
    Ok(ExitCode::SUCCESS)
}

/// The command line without its hidden subcommands (this one, the lab's internal processes,
/// netplan's detached verifier), which clap_complete would offer; clap_mangen skips them by
/// itself.
fn visible() -> clap::Command {
    prune(Cli::command())
}

/// `cmd` with every hidden subcommand left out, at any depth. clap cannot remove a subcommand,
/// so a command with hidden children is built again around the visible ones, keeping what
/// completions use: name, about, arguments, aliases, subcommands. The `netplan`, `lab` and top
/// level commands that this rebuilds are only containers of subcommands.
fn prune(cmd: clap::Command) -> clap::Command {
    if !cmd.get_subcommands().any(clap::Command::is_hide_set) {
        return cmd.mut_subcommands(prune);
    }
    // Without clap's `string` feature a command's name is a `&'static str`; this process writes
    // a few files and exits, so leaking the few names rebuilt here costs nothing.
    let name: &'static str = Box::leak(cmd.get_name().to_owned().into_boxed_str());
    let mut out = clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(cmd.is_propagate_version_set())
        .subcommand_required(cmd.is_subcommand_required_set())
        .args(cmd.get_arguments().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned()
                .map(prune),
        );
    for alias in cmd.get_visible_aliases() {
        let alias: &'static str = Box::leak(alias.to_owned().into_boxed_str());
        out = out.visible_alias(alias);
    }
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    out
}

fn list(out: &mut impl std::io::Write, dir: &Path) -> anyhow::Result<()> {
    let mut pages = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    pages.sort();
    for page in pages {
        writeln!(out, "{}", page.display())?;
    }
    Ok(())
}
