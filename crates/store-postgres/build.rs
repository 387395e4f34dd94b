//! `sqlx::migrate!` embeds the migration files at compile time, but on stable Rust cargo does not
//! know it read them: without this, adding a migration leaves incremental builds with the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
