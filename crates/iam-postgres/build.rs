//! Build script: makes cargo re-embed the migrations when any file below `migrations/`
//! changes (including a new migration directory, which `embed_migrations!` alone would not
//! notice), and exports a fingerprint of their names and contents as
//! `IAM_MIGRATIONS_FINGERPRINT`, which `test_support` uses to name its template database.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

const MIGRATIONS_DIR: &str = "../../migrations";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={MIGRATIONS_DIR}");
    let mut files = Vec::new();
    collect_files(Path::new(MIGRATIONS_DIR), &mut files)?;
    files.sort();

    let mut hash = Fnv1a::new();
    for file in &files {
        let relative = file.strip_prefix(MIGRATIONS_DIR)?;
        hash.write(relative.to_string_lossy().as_bytes());
        hash.write(&[0]);
        hash.write(&fs::read(file)?);
        hash.write(&[0]);
    }
    println!(
        "cargo:rustc-env=IAM_MIGRATIONS_FINGERPRINT={:016x}",
        hash.finish()
    );
    Ok(())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// 64-bit FNV-1a: tiny, dependency-free and stable across toolchains (unlike `DefaultHasher`).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
