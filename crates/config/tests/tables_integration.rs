//! Checks that depend on rsmtpd-table opening the declared tables: a
//! missing file, and the list-or-mapping shape of file tables.
//!
//! Every test here is marked `// needs rsmtpd-table's real open()`: with a
//! stub `Table::open` (always Ok, shape Dynamic) they fail, by design.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use common::{RULE, ok, one_error};

#[test]
fn missing_table_file_is_named() {
    // needs rsmtpd-table's real open()
    let dir = common::temp_dir("tables-missing");
    let path = dir.join("nope");
    let e = one_error(&format!("table aliases file:{}\n{RULE}", path.display()));
    assert_eq!((e.line, e.col), (1, 15));
    assert!(
        e.message.starts_with(&format!(
            "invalid configuration file {} for table aliases: ",
            path.display()
        )),
        "{}",
        e.message
    );
    assert!(e.message.matches(&path.display().to_string()).count() >= 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_db_file_is_named() {
    // needs rsmtpd-table's real open()
    let dir = common::temp_dir("tables-missing-db");
    let path = dir.join("domains.db");
    let e = one_error(&format!("table domains db:{}\n{RULE}", path.display()));
    assert!(
        e.message.contains(&path.display().to_string()),
        "{}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mapping_file_cannot_be_a_list() {
    // needs rsmtpd-table's real open()
    let dir = common::temp_dir("tables-shape-map");
    let path = dir.join("aliases");
    std::fs::write(&path, "root: alice\npostmaster: alice\n").expect("write");
    let e = one_error(&format!(
        "table aliases file:{}\naction a mbox\nmatch for domain <aliases> action a\n",
        path.display()
    ));
    assert_eq!((e.line, e.col), (3, 18));
    assert_eq!(
        e.message,
        "table \"aliases\" may not be used for 'for' lookups"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn list_file_cannot_be_a_mapping() {
    // needs rsmtpd-table's real open()
    let dir = common::temp_dir("tables-shape-list");
    let path = dir.join("domains");
    std::fs::write(&path, "# @list\nexample.org\nexample.com\n").expect("write");
    let e = one_error(&format!(
        "table domains file:{}\naction a mbox alias <domains>\n{RULE}",
        path.display()
    ));
    assert_eq!((e.line, e.col), (2, 21));
    assert_eq!(
        e.message,
        "table \"domains\" may not be used for alias lookups"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn well_formed_file_tables_are_accepted() {
    // needs rsmtpd-table's real open() (passes with the stub too)
    let dir = common::temp_dir("tables-good");
    let aliases = dir.join("aliases");
    let domains = dir.join("domains");
    std::fs::write(&aliases, "root: alice\n").expect("write");
    std::fs::write(&domains, "example.org\n").expect("write");
    let c = ok(&format!(
        "table aliases file:{}\ntable domains \"{}\"\naction a mbox alias <aliases>\nmatch for domain <domains> action a\n",
        aliases.display(),
        domains.display()
    ));
    assert_eq!(c.tables[0].name, "aliases");
    assert_eq!(c.tables[1].name, "domains");
    let _ = std::fs::remove_dir_all(&dir);
}
