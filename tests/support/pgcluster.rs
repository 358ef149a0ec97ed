//! A private PostgreSQL cluster for tests that restart or break the
//! database: `initdb` and `pg_ctl` of the installed PostgreSQL, a free
//! loopback port, a temporary folder, trust authentication. As root (CI)
//! the server runs as the `postgres` user, since PostgreSQL refuses root.
//!
//! Without the binaries the tests say so loudly and skip, unless
//! `TRACKC_REQUIRE_POSTGRES=1` (as `.ci/run` sets), where they fail.
//! `TRACKC_PG_BIN` names the folder of the binaries if they are elsewhere.

#![allow(dead_code)]

use super::db::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Runs the server's commands as this user (when the tests are root).
    user: Option<&'static str>,
}

pub fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TRACKC_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    // The newest major version.
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// A new cluster, started; `None` (after a loud message) when the
    /// PostgreSQL binaries are missing and they are not required.
    pub fn start(name: &str) -> Option<Cluster> {
        let Some(bin) = find_bin() else {
            if std::env::var("TRACKC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL's initdb and pg_ctl are required (TRACKC_REQUIRE_POSTGRES=1) but were not found under /usr/lib/postgresql; set TRACKC_PG_BIN");
            }
            eprintln!("\n!!! SKIPPED: no initdb/pg_ctl found; set TRACKC_PG_BIN !!!\n");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("trackc-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let user = is_root().then_some("postgres");
        if let Some(user) = user {
            run(Command::new("chown").args([&format!("{user}:"), dir.to_str().unwrap()]));
        }
        let cluster = Cluster {
            port: free_port(),
            dir,
            bin,
            user,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            cluster.port,
            cluster.dir.display()
        );
        cluster.ctl(&["start", "-o", &options]);
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl restart -m MODE` (`fast`: connections are terminated;
    /// `immediate`: the server stops without a checkpoint and recovers).
    pub fn restart(&self, mode: &str) {
        self.ctl(&["restart", "-m", mode]);
    }

    pub fn stop(&self, mode: &str) {
        self.ctl(&["stop", "-m", mode]);
    }

    pub fn start_again(&self) {
        self.ctl(&["start"]);
    }

    /// pg_ctl's log of the server.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir.join("log");
        let mut all = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all);
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args).current_dir(&self.dir);
        run(&mut cmd);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let path = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = match self.user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(&path)
                .args(args)
                .output(),
            None => Command::new(&path).args(args).output(),
        };
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "the cluster's folder is kept: {}",
                Path::new(&self.dir).display()
            );
        }
    }
}
