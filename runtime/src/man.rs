//! Man pages generated from the CLI itself (clap_mangen), so that they
//! never drift from `--help`: one page for the program and one per
//! subcommand (`dpu-agent-run.8`...), section 8 (system administration).

use std::path::{Path, PathBuf};

/// Writes the man pages of `command` (named by its binary name) into `dir`
/// and returns their paths.
pub fn write_man_pages(command: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let name = command.get_name().to_string();
    let mut written = vec![render(command.clone(), &name, dir)?];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().name(page.clone()).version(
            command
                .get_version()
                .map(str::to_string)
                .unwrap_or_default(),
        );
        written.push(render(sub, &page, dir)?);
    }
    Ok(written)
}

fn render(command: clap::Command, name: &str, dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{name}.8"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section("8")
        .render(&mut page)?;
    std::fs::write(&path, page)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_visible_subcommand() {
        let command = clap::Command::new("agent")
            .version("1.0")
            .about("An agent")
            .subcommand(clap::Command::new("run").about("Run it"))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().expect("dir");
        let pages = write_man_pages(command, dir.path()).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["agent.8", "agent-run.8"]);
        let page = std::fs::read_to_string(&pages[1]).expect("page");
        assert!(page.contains(".TH agent-run 8"), "{page}");
        assert!(page.contains("Run it"), "{page}");
    }
}
