//! Embeds every file of `migrations/` in the binary, so the Lambda zip carries its migrations.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new("migrations");
    println!("cargo:rerun-if-changed=migrations");
    let mut files: Vec<String> = fs::read_dir(dir)
        .expect("migrations/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let mut out = String::from(
        "/// (file name, contents) of every embedded migration file.\npub const FILES: &[(&str, &str)] = &[\n",
    );
    for name in &files {
        println!("cargo:rerun-if-changed=migrations/{name}");
        let path = fs::canonicalize(dir.join(name)).expect("migration file readable");
        out.push_str(&format!("    ({name:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("OUT_DIR set by cargo")).join("embedded_migrations.rs");
    fs::write(dest, out).expect("OUT_DIR writable");
}
