//! Writes willwatch's man pages, generated from the command-line
//! definition (`src/cli.rs`), into the folder given (default `target/man`):
//! `willwatch.1` and one `willwatch-<command>.1` per subcommand. The
//! package build (`packaging/build-deb`) ships them.

use std::path::PathBuf;

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/man".into()));
    std::fs::create_dir_all(&dir)?;
    let mut command = willwatch::cli::Cli::command();
    // Built, each subcommand has the global options (`-c`) for its page.
    command.build();
    let mut pages = vec![("willwatch".to_string(), command.clone())];
    for sub in command.get_subcommands() {
        // clap names take static text; the program ends right after.
        let name: &'static str = Box::leak(format!("willwatch-{}", sub.get_name()).into_boxed_str());
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.1")), out)?;
    }
    Ok(())
}
