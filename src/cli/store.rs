//! `dialogd store verify | backup | restore | rekey | newkey`: checking,
//! copying and restoring the embedded store, and its encryption keys.

use crate::config::{Settings, StoreSettings};
use crate::store::backup;
use crate::store::sled::{export, verify};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Checks a stopped store: sled's integrity check, its manifest, and
    /// dialogd's invariants (head counts match stored turns, no half
    /// exchanges, idempotency records point at stored turns). Exit status 1
    /// when anything is wrong.
    Verify {
        /// The data dir to check (the server must be stopped).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Writes a backup file (dialogd-<millis>.backup) into --to: from a
    /// running server over gRPC (--addr; admin role), or from a stopped
    /// data dir (--data-dir). The file is checked before it is kept.
    Backup {
        /// A stopped data dir to back up.
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "addr",
            conflicts_with = "addr"
        )]
        data_dir: Option<PathBuf>,
        /// A running server, e.g. 127.0.0.1:50051 or https://dialogd:50051.
        #[arg(long)]
        addr: Option<String>,
        /// API key or JWT of an admin [env: DIALOGD_API_KEY].
        #[arg(long)]
        key: Option<String>,
        /// Directory the backup file is written to (created if missing).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Afterwards, delete all but the newest N backup files in --to.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
    },
    /// Restores a backup file into an empty or new data dir; start dialogd
    /// on it afterwards.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The (empty or new) data dir to fill.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Seals every record with store.encryption's primary key — records
    /// sealed with older keys and records written before encryption — so
    /// the older keys can leave the ring. Reads the store and the keys
    /// from --config. The embedded store must be stopped; Redis is
    /// rekeyed online.
    Rekey,
    /// Prints a new key for store.encryption's key ring.
    Newkey {
        /// The key's id: lowercase letters, digits and '-'.
        #[arg(long)]
        id: String,
    },
}

/// Store settings for `data_dir`, with the config's encryption keys.
fn settings_with(data_dir: &Path, config: Option<&Settings>) -> StoreSettings {
    StoreSettings {
        data_dir: data_dir.to_owned(),
        encryption: config
            .map(|c| c.store.encryption.clone())
            .unwrap_or_default(),
        ..StoreSettings::default()
    }
}

/// Runs `command`; `config` is the loaded `--config`, if one was given.
pub fn run(command: StoreCommand, config: Option<Result<Settings, String>>) -> ExitCode {
    let config = match config.transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dialogd store: {e}");
            return ExitCode::from(2);
        }
    };
    // Only the commands that open a store read its keys from --config.
    let reads_config = !matches!(
        command,
        StoreCommand::Newkey { .. } | StoreCommand::Backup { addr: Some(_), .. }
    );
    if config.is_some() && !reads_config {
        eprintln!(
            "dialogd store: --config is not read by newkey or an online backup (--addr): the server holds the store"
        );
        return ExitCode::from(2);
    }
    let settings = |dir: &Path| settings_with(dir, config.as_ref());
    let prune = match &command {
        StoreCommand::Backup {
            to, keep: Some(n), ..
        } => Some((to.clone(), *n)),
        _ => None,
    };
    let mut result = match command {
        StoreCommand::Verify { data_dir } => run_verify(&settings(&data_dir)),
        StoreCommand::Rekey => match &config {
            Some(config) => super::rekey::rekey(config),
            None => Err("rekey needs --config (the store and store.encryption)".into()),
        },
        StoreCommand::Newkey { id } => super::rekey::new_key(&id),
        StoreCommand::Backup {
            data_dir: Some(dir),
            to,
            ..
        } => export::backup_offline(&settings(&dir), &to).map(|(path, records)| {
            println!(
                "backup of {}: {} ({records} records)",
                dir.display(),
                path.display()
            );
            true
        }),
        StoreCommand::Backup {
            addr: Some(addr),
            key,
            to,
            ..
        } => backup_online(&addr, key, &to),
        StoreCommand::Backup { .. } => Err("give --data-dir or --addr".into()),
        StoreCommand::Restore { from, data_dir } => export::restore(&from, &settings(&data_dir))
            .map(|(records, erased)| {
                println!("restored {records} records into {}", data_dir.display());
                if erased > 0 {
                    println!(
                        "dropped {erased} dialogue(s) erased since the backup: their keys are destroyed"
                    );
                }
                true
            }),
    };
    if let (Ok(true), Some((dir, keep))) = (&result, prune) {
        result = export::prune_backups(&dir, keep as usize).map(|removed| {
            for path in removed {
                println!("removed the older backup {}", path.display());
            }
            true
        });
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dialogd store: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_verify(settings: &StoreSettings) -> Result<bool, String> {
    let report = verify::verify(settings)?;
    println!(
        "{}: {} dialogues, {} turns, {} records",
        settings.data_dir.display(),
        report.dialogues,
        report.turns,
        report.records
    );
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    if report.problems.is_empty() {
        println!("ok");
    }
    Ok(report.problems.is_empty())
}

fn backup_online(addr: &str, key: Option<String>, to: &Path) -> Result<bool, String> {
    let key = key.or_else(|| std::env::var("DIALOGD_API_KEY").ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (path, records) = export::write_backup_file(to, |file| {
        runtime.block_on(crate::grpc::backup_client::fetch(
            addr,
            key.as_deref(),
            |bytes| file.write_all(bytes),
        ))?;
        // Keep the file only if it reads back whole.
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        backup::read(&mut *file, |_, _| Ok(())).map_err(|e| format!("the backup received: {e}"))
    })?;
    println!("backup of {addr}: {} ({records} records)", path.display());
    Ok(true)
}
